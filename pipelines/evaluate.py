"""`medvid evaluate drafts OUT --ingest DIR`: score drafted reports against the ingest's labels and reports.

Reads ``OUT/drafts.jsonl`` (docs/drafting_contract.md) and ``DIR/labels.csv`` / ``DIR/reports.csv``;
writes ``OUT/evaluation/metrics.json`` and ``OUT/evaluation/report.md`` atomically (``medvid.report.evaluate``
defines the metrics and baselines, and leaves out drafts of studies in the bank). Returns the headline
numbers; what the numbers need said (drafts left out, undefined baselines) also goes to stderr.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.report.evaluate import evaluate_drafts, headline, markdown_report
from medvid.runs import claim_out, run_settings
from medvid.utils import atomic_write_text

log = logging.getLogger("medvid")


@dataclass
class Config:
    drafts: str = setting("", "output folder of `medvid draft` (holds drafts.jsonl)")
    ingest: str = setting("", "ingest folder with labels.csv / reports.csv (keyed by study_key)")
    out: str = setting("", "blank: <drafts>/evaluation (metrics.json, report.md)")
    baseline_split: str = setting("train", "studies the baselines draw on (those not scored): training mean / "
                                           "prevalence / random neighbour")
    seed: int = setting(0, "random-neighbour baseline")
    overwrite: bool = setting(False, "true: replace an evaluation made with other settings in OUT (only a folder "
                                     "medvid evaluate wrote); false: such a run is refused")


def run(cfg: Config) -> dict:
    drafts, ingest = Path(cfg.drafts), Path(cfg.ingest)
    if not cfg.drafts or not (drafts / "drafts.jsonl").is_file():
        raise MedvidError(f"{cfg.drafts or '(drafts folder not set)'}: no drafts.jsonl (output folder of `medvid draft`)")
    if not cfg.ingest or not ingest.is_dir():
        raise MedvidError(f"ingest folder not found: {cfg.ingest!r}")
    if cfg.baseline_split not in ("", "train", "val", "test"):
        raise MedvidError(f"baseline_split must be train, val, test or blank, got {cfg.baseline_split!r}")
    out = Path(cfg.out) if cfg.out else drafts / "evaluation"
    claim_out(out, "evaluate", run_settings(cfg, ignore=("out", "overwrite")), overwrite=cfg.overwrite,
              own=lambda o: (o / "metrics.json").is_file() and (o / "report.md").is_file())
    metrics = evaluate_drafts(drafts / "drafts.jsonl", ingest, baseline_split=cfg.baseline_split, seed=cfg.seed)
    atomic_write_text(out / "metrics.json", json.dumps(_nan_to_none(metrics), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", markdown_report(metrics))
    summary = {"out": str(out), **headline(metrics)}
    for note in metrics["notes"]:
        log.warning("evaluate: %s", note)
    log.info("evaluate: %d drafted studies scored → %s", metrics["studies"], out)
    return summary


def _nan_to_none(obj: Any) -> Any:
    """Undefined metrics (NaN: one class only, no pairs) as JSON ``null``."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj
