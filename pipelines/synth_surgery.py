"""`medvid synth surgery OUT`: synthetic Cholec80-layout videos with phase and tool annotations."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medvid.runs import claim_out, run_settings
from medvid.config import setting
from medvid.errors import MedvidError
from medvid.synth.surgery import STYLE_CHOICES, synthesize_video
from medvid.utils import progress

log = logging.getLogger("medvid")


@dataclass
class Config:
    out: str = setting("synth_surgery", "output folder (Cholec80 layout)")
    videos: int = setting(4, "how many videos", min=1)
    seed: int = setting(0, "random seed")
    first_id: int = setting(1, "numbering: video01, video02, ... from this number (named splits use these numbers)")
    ids: list[int] = setting(help="explicit video numbers, e.g. [41, 42]; overrides videos/first_id", factory=list)
    height: int = setting(224, "frame height in pixels")
    width: int = setting(224, "frame width in pixels")
    duration_scale: float = setting(1.0, "phase lengths x this; 1.0 gives videos of about 60-100 s at 25 fps")
    crf: int = setting(23, "libx264 quality")
    style: str = setting("a", "a = the development world; b = a shifted world (other colours, tool shapes, camera) "
                              "for zero-shot evaluation (never tune on it); random = a world drawn from wide "
                              "distributions by the seed (every seed another world; docs/zero_shot.md)")
    overwrite: bool = setting(False, "false: keep videos already written (resume)")


def run(cfg: Config) -> dict:
    out = Path(cfg.out)
    if cfg.style not in STYLE_CHOICES:
        raise MedvidError(f"style must be one of {list(STYLE_CHOICES)}, got {cfg.style!r}")
    # Outputs already there are kept (resume) only when they were made with these settings.
    claim_out(out, "synth surgery", run_settings(cfg, ignore=("out", "videos", "first_id", "ids", "overwrite")),
              overwrite=cfg.overwrite, has_results=any((out / "videos").glob("*.mp4")),
              own=lambda o: (o / "videos").is_dir() and (o / "phase_annotations").is_dir())
    ids = list(cfg.ids) or list(range(cfg.first_id, cfg.first_id + cfg.videos))
    made, skipped, seconds = [], [], 0.0
    for vid in progress(ids, desc="synth surgery", unit="video"):
        name = f"video{vid:02d}"
        done = [out / "videos" / f"{name}.mp4", out / "phase_annotations" / f"{name}-phase.txt",
                out / "tool_annotations" / f"{name}-tool.txt"]
        if not cfg.overwrite and all(p.exists() for p in done):  # resume: outputs are written atomically
            skipped.append(name)
            continue
        row = synthesize_video(out, vid, cfg.seed, size=(cfg.height, cfg.width),
                               duration_scale=cfg.duration_scale, crf=cfg.crf, style=cfg.style)
        made.append(row["video"])
        seconds += row["seconds"]
    return {"out": str(out), "written": made, "skipped_existing": skipped, "seconds_written": round(seconds, 2)}
