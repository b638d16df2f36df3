"""`medvid synth echo OUT`: synthetic echo studies as real DICOM files, with reports/labels/views CSVs;
with ``layout=echonet``, A4C videos in the EchoNet-Dynamic layout instead (``medvid.synth.echonet``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from medvid.errors import MedvidError
from medvid.synth.echo import synthesize
from medvid.synth.echonet import synthesize_echonet

LAYOUTS = ("dicom", "echonet")


@dataclass
class Config:
    out: str = "synth_echo"
    layout: str = "dicom"  # dicom | echonet (Videos/*.avi, FileList.csv, VolumeTracings.csv; one video per study)
    studies: int = 24
    seed: int = 0
    loops_per_study: int = 6
    # views every study holds (the rest drawn at random from the other EchoPrime views)
    required_views: list[str] = field(default_factory=lambda: ["A4C", "Parasternal_Long"])
    rows: int = 128
    cols: int = 160
    frames_min: int = 32
    frames_max: int = 64
    fps_choices: list[float] = field(default_factory=lambda: [30.0, 50.0, 60.0])
    # Share of loops per file format (jpeg_ybr, rgb, rle, jpegls, mono); normalised.
    format_weights: dict[str, float] = field(default_factory=lambda: {
        "jpeg_ybr": 0.7, "rgb": 0.08, "rle": 0.08, "jpegls": 0.04, "mono": 0.1})
    still_fraction: float = 0.5  # studies that also hold a single-frame screenshot
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    jpeg_quality: int = 90
    progress: bool = True


def run(cfg: Config) -> dict:
    if cfg.layout not in LAYOUTS:
        raise MedvidError(f"layout must be one of {LAYOUTS}, got {cfg.layout!r}")
    from medvid.vocab import ECHO_VIEWS

    unknown = sorted(set(cfg.required_views) - set(ECHO_VIEWS))
    if unknown:
        raise MedvidError(f"required_views: unknown views {unknown}; known: {list(ECHO_VIEWS)}")
    if cfg.layout == "echonet":
        with tqdm(total=cfg.studies, desc="synth echonet", unit="video", disable=not cfg.progress) as bar:
            return synthesize_echonet(Path(cfg.out), videos=cfg.studies, seed=cfg.seed,
                                      frames_range=(cfg.frames_min, cfg.frames_max), fps_choices=list(cfg.fps_choices),
                                      split_fractions=list(cfg.split_fractions), progress=bar.update)
    with tqdm(total=cfg.studies * cfg.loops_per_study, desc="synth echo", unit="loop", disable=not cfg.progress) as bar:
        return synthesize(Path(cfg.out), studies=cfg.studies, seed=cfg.seed, loops_per_study=cfg.loops_per_study,
                          rows=cfg.rows, cols=cfg.cols, frames_range=(cfg.frames_min, cfg.frames_max),
                          fps_choices=list(cfg.fps_choices), format_weights=dict(cfg.format_weights),
                          still_fraction=cfg.still_fraction, split_fractions=list(cfg.split_fractions),
                          jpeg_quality=cfg.jpeg_quality, progress=bar.update,
                          required_views=list(cfg.required_views))
