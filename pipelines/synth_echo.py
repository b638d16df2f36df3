"""`medvid synth echo OUT`: synthetic echo studies as real DICOM files, with reports/labels/views CSVs;
with ``layout=echonet``, A4C videos in the EchoNet-Dynamic layout instead (``medvid.synth.echonet``)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from medvid.config import setting
from medvid.runs import claim_out, run_settings
from medvid.errors import MedvidError
from medvid.synth.echo import DEFAULT_LOOK, report_sections, synthesize
from medvid.synth.echo_world import random_echo_world
from medvid.synth.echonet import synthesize_echonet
from medvid.utils import progress

LAYOUTS = ("dicom", "echonet")
STYLES = ("a", "random")
OWN_FILES = ("reports.csv", "labels.csv", "views.csv", "FileList.csv", "VolumeTracings.csv")  # both layouts' tables


@dataclass
class Config:
    out: str = setting("synth_echo", "output folder")
    layout: str = setting("dicom", "dicom | echonet: OUT/Videos/*.avi (112x112 A4C), FileList.csv, VolumeTracings.csv; "
                                   "studies = videos; rows/cols/loops/formats/stills then do not apply")
    studies: int = setting(24, "number of studies", min=1)
    seed: int = setting(0, "random seed")
    style: str = setting("a", "a = the development world; random = a world drawn by the seed (probe geometry, gain, "
                              "speckle, colour map, heart rate and cycle, wall motion, report phrasing and section "
                              "order): every seed another world (layout=dicom; docs/zero_shot.md)")
    loops_per_study: int = setting(6, "cine loops per study: required_views always, the rest drawn from the other "
                                      "EchoPrime views", min=1)
    required_views: list[str] = setting(help="views every study holds, e.g. add Apical_Doppler, "
                                             "Doppler_Parasternal_Long/Short for the Doppler jets",
                                        factory=lambda: ["A4C", "Parasternal_Long"])
    rows: int = setting(128, "frame height in pixels")
    cols: int = setting(160, "frame width in pixels")
    frames_min: int = setting(32, "fewest frames per loop", min=1)
    frames_max: int = setting(64, "most frames per loop", min=1)
    fps_choices: list[float] = setting(help="frame rates drawn per loop", factory=lambda: [30.0, 50.0, 60.0])
    format_weights: dict[str, float] = setting(
        help="share of loops per file format (jpeg_ybr, rgb, rle, jpegls, mono); normalised",
        factory=lambda: {"jpeg_ybr": 0.7, "rgb": 0.08, "rle": 0.08, "jpegls": 0.04, "mono": 0.1})
    still_fraction: float = setting(0.5, "share of studies that also hold a single-frame screenshot (not a cine loop)")
    split_fractions: list[float] = setting(help="train / val / test shares, by study", factory=lambda: [0.7, 0.15, 0.15])
    jpeg_quality: int = setting(90, "JPEG quality of the compressed loops")
    progress: bool = setting(True, "show a progress bar")
    overwrite: bool = setting(False, "true: replace the export an earlier run with other settings wrote in OUT (only "
                                     "a folder medvid synth echo wrote); false: such a run is refused")


def run(cfg: Config) -> dict:
    if cfg.layout not in LAYOUTS:
        raise MedvidError(f"layout must be one of {LAYOUTS}, got {cfg.layout!r}")
    if cfg.style not in STYLES:
        raise MedvidError(f"style must be one of {STYLES}, got {cfg.style!r}")
    if cfg.style != "a" and cfg.layout != "dicom":
        raise MedvidError(f"style={cfg.style} is made for layout=dicom only (the EchoNet tracings follow style a)")
    from medvid.vocab import ECHO_VIEWS

    unknown = sorted(set(cfg.required_views) - set(ECHO_VIEWS))
    if unknown:
        raise MedvidError(f"required_views: unknown views {unknown}; known: {list(ECHO_VIEWS)}")
    out = Path(cfg.out)
    # Same settings write the same files again; other settings would mix two exports, so start afresh.
    # Only the record proves the folder ours: a real export (an EchoNet-Dynamic FileList.csv, a reports.csv)
    # looks like our output, and overwrite=true deletes what it holds.
    same = claim_out(out, "synth echo", run_settings(cfg, ignore=("out", "progress", "overwrite")),
                     overwrite=cfg.overwrite)
    if cfg.overwrite and not same:
        _remove_export(out)
    if cfg.layout == "echonet":
        with progress(total=cfg.studies, desc="synth echonet", unit="video", enabled=cfg.progress) as bar:
            return synthesize_echonet(Path(cfg.out), videos=cfg.studies, seed=cfg.seed,
                                      frames_range=(cfg.frames_min, cfg.frames_max), fps_choices=list(cfg.fps_choices),
                                      split_fractions=list(cfg.split_fractions), progress=bar.update)
    look, sections = random_echo_world(cfg.seed) if cfg.style == "random" else (DEFAULT_LOOK, report_sections)
    with progress(total=cfg.studies * cfg.loops_per_study, desc="synth echo", unit="loop", enabled=cfg.progress) as bar:
        return synthesize(Path(cfg.out), studies=cfg.studies, seed=cfg.seed, loops_per_study=cfg.loops_per_study,
                          rows=cfg.rows, cols=cfg.cols, frames_range=(cfg.frames_min, cfg.frames_max),
                          fps_choices=list(cfg.fps_choices), format_weights=dict(cfg.format_weights),
                          still_fraction=cfg.still_fraction, split_fractions=list(cfg.split_fractions),
                          jpeg_quality=cfg.jpeg_quality, progress=bar.update,
                          required_views=list(cfg.required_views), look=look, sections=sections)


def _remove_export(out: Path) -> None:
    """Remove the export an earlier run wrote in ``out`` (a folder :func:`claim_out` proved to be this job's):
    its tables, its DICOM tree and its videos, nothing else."""
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "dicom", ignore_errors=True)
    for video in (out / "Videos").glob("*.avi"):
        video.unlink()
