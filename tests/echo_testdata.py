"""Shared builders for the echo tests: a small synthetic export and its ingest (kept fast)."""
from __future__ import annotations

from pathlib import Path

from medvid.config import load_config

SMALL_SYNTH = dict(studies=4, seed=7, loops_per_study=4, rows=96, cols=128, frames_range=(16, 24),
                   format_weights={"jpeg_ybr": 0.5, "rgb": 0.15, "rle": 0.15, "jpegls": 0.05, "mono": 0.15},
                   still_fraction=1.0)


def make_synth(out: Path) -> dict:
    from medvid.synth.echo import synthesize

    return synthesize(out, **SMALL_SYNTH)


def ingest(root: Path, out: Path, *overrides: str) -> dict:
    from medvid.pipelines import ingest as job

    cfg = load_config(job.Config, "ingest", None, [f"dicom_root={root}", f"out={out}", "progress=false", *overrides])
    return job.run(cfg)


def ingest_synth(synth: Path, out: Path, *overrides: str) -> dict:
    return ingest(synth / "dicom", out, f"reports={synth / 'reports.csv'}", f"labels={synth / 'labels.csv'}",
                  f"views={synth / 'views.csv'}", *overrides)
