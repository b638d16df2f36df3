"""`medvid synth surgery OUT`: synthetic Cholec80-layout videos with phase and tool annotations."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from medvid.runs import claim_run, run_settings
from medvid.errors import MedvidError
from medvid.synth.surgery import STYLES, synthesize_video

log = logging.getLogger("medvid")


@dataclass
class Config:
    out: str = "synth_surgery"
    videos: int = 4
    seed: int = 0
    first_id: int = 1  # videos are numbered first_id, first_id+1, ... so named splits still apply
    ids: list[int] = field(default_factory=list)  # explicit ids (overrides videos/first_id)
    height: int = 224
    width: int = 224
    duration_scale: float = 1.0  # 1.0 gives ~60-100 s videos
    crf: int = 23
    style: str = "a"  # a = the development world; b = the shifted world for zero-shot evaluation (never tune on it)
    overwrite: bool = False


def run(cfg: Config) -> dict:
    out = Path(cfg.out)
    if cfg.style not in STYLES:
        raise MedvidError(f"style must be one of {sorted(STYLES)}, got {cfg.style!r}")
    # Outputs already there are kept (resume) only when they were made with these settings.
    claim_run(out, run_settings(cfg, ignore=("out", "videos", "first_id", "ids", "overwrite")), overwrite=cfg.overwrite,
              has_results=any((out / "videos").glob("*.mp4")))
    ids = list(cfg.ids) or list(range(cfg.first_id, cfg.first_id + cfg.videos))
    made, skipped, seconds = [], [], 0.0
    for vid in tqdm(ids, desc="synth surgery", unit="video"):
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
