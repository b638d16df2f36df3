"""``medvid demo``: every stage end to end on synthetic data, as a user would chain the commands.

Echo: synth echo → ingest → view classifier → study/report pretraining.
Surgery: synth lectures → lecture pairs → clip/speech pretraining → synth Cholec80-layout videos
→ zero-shot phase and tool recognition with the pretrained model.

Each stage is the same job the CLI runs, with its shipped config plus the overrides below; a
finished stage leaves ``OUT/<stage>/summary.json`` and is skipped on a re-run (resume).
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvid.config import load_config
from medvid.utils import atomic_write_text

log = logging.getLogger("medvid")


@dataclass
class Config:
    out: str = "demo_out"
    seed: int = 0
    echo_studies: int = 48
    lectures: int = 12
    surgery_videos: int = 4
    echo_steps: int = 150
    surgical_steps: int = 200
    view_steps: int = 200
    # Extra key=value overrides per stage, e.g. {pretrain_echo: ["train.lr=0.001"]}.
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)


def _stages(cfg: Config, out: Path) -> list[tuple[str, str, str | None, list[str]]]:
    """(stage, job module, shipped config name, overrides) in run order."""
    echo, surg = out / "echo", out / "surgery"
    synth, ingest = echo / "synth", echo / "ingest"
    dicom = synth / "dicom"  # synth echo writes DICOM under OUT/dicom and the CSVs beside it
    lectures, pairs, cholec = surg / "lectures", surg / "pairs", surg / "cholec80"
    seed = f"seed={cfg.seed}"
    return [
        ("synth_echo", "synth_echo", "synth_echo", [f"out={synth}", f"studies={cfg.echo_studies}", seed]),
        ("ingest", "ingest", "ingest", [f"dicom_root={dicom}", f"out={ingest}", f"reports={synth / 'reports.csv'}",
                                        f"labels={synth / 'labels.csv'}", f"views={synth / 'views.csv'}"]),
        ("train_views", "train_views", "view_classifier", [
            f"ingest_dir={ingest}", f"dicom_root={dicom}", f"out={echo / 'view_classifier'}",
            f"train.max_steps={cfg.view_steps}", f"train.seed={cfg.seed}"]),
        ("pretrain_echo", "pretrain", "echo_pretrain", [
            f"echo.ingest_dir={ingest}", f"echo.dicom_root={dicom}", f"out={echo / 'pretrain'}",
            f"train.max_steps={cfg.echo_steps}", f"train.seed={cfg.seed}"]),
        ("synth_lectures", "synth_lectures", "synth_lectures", [f"out={lectures}", f"lectures={cfg.lectures}", seed]),
        ("lectures_index", "lectures_index", "lectures_index", [f"root={lectures}", f"out={pairs}", seed]),
        ("pretrain_surgical", "pretrain", "surgical_pretrain", [
            f"lectures.pairs={pairs / 'pairs.jsonl'}", f"lectures.root={lectures}", f"out={surg / 'pretrain'}",
            f"train.max_steps={cfg.surgical_steps}", f"train.seed={cfg.seed}"]),
        # Held-out surgery videos numbered as the Cholec80 test split (49-80), so the named split applies.
        ("synth_surgery", "synth_surgery", "synth_surgery", [f"out={cholec}", f"videos={cfg.surgery_videos}",
                                                            "first_id=49", f"seed={cfg.seed + 1}"]),
        ("zero_shot_phase", "zero_shot", "zero_shot", [
            "task=phase", f"data_root={cholec}", f"model={surg / 'pretrain' / 'model'}",
            f"out={surg / 'zero_shot_phase'}"]),
        ("zero_shot_tools", "zero_shot", "zero_shot", [
            "task=tools", f"data_root={cholec}", f"model={surg / 'pretrain' / 'model'}",
            f"out={surg / 'zero_shot_tools'}"]),
    ]


def run(cfg: Config) -> dict[str, Any]:
    out = Path(cfg.out)
    summary: dict[str, Any] = {}
    for stage, job, config_name, overrides in _stages(cfg, out):
        done = out / "stages" / f"{stage}.json"
        if done.exists():
            log.info("demo: %s already done (delete %s to redo)", stage, done)
            summary[stage] = json.loads(done.read_text())
            continue
        log.info("demo: running %s", stage)
        module = importlib.import_module(f"medvid.pipelines.{job}")
        stage_cfg = load_config(module.Config, config_name, None, overrides + list(cfg.stage_overrides.get(stage, [])))
        start = time.perf_counter()
        result = module.run(stage_cfg) or {}
        result["seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_text(done, json.dumps(result, indent=2, default=str))
        summary[stage] = result
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return {stage: _headline(stage, result) for stage, result in summary.items()}


# Nested numbers worth printing; everything else stays in OUT/stages/<stage>.json.
_HEADLINE_METRICS = ("accuracy", "strict_accuracy", "strict_macro_f1", "relaxed_jaccard", "map", "text_to_video_recall@1",
                     "text_to_video_recall@5", "video_to_text_recall@5", "chance_recall@5")


def _headline(stage: str, result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Top-level scalars of a stage's summary, plus the headline metrics of its nested blocks."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(_headline(stage, value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            if not prefix or key in _HEADLINE_METRICS:
                out[f"{prefix}{key}"] = round(value, 3) if isinstance(value, float) else value
    return out
