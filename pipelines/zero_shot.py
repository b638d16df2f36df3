"""``medvid zero-shot phase|tools DATA_ROOT --model DIR --out DIR``: zero-shot surgical phase / tool
recognition on a Cholec80-layout root (or a folder of videos: predictions only).

The recogniser (``medvid.zeroshot.recognise``, the settings it defines come first in ``Config``) scores each
video: embeddings every ``1/fps`` s → prompt scores, calibrated → ``OUT/predictions/<video>.csv`` (atomic;
videos already there are skipped, so a killed run resumes). Phases are then self-trained over all the run's
videos from the prompt-only scores kept in the CSVs. Then ``OUT/metrics.json`` (strict and relaxed,
labelled), ``OUT/plots/*.png`` and ``OUT/report.md`` from the CSVs of the selected videos. The output
folder and its formats are ``medvid.zeroshot.outputs`` (``ResultsFolder``), the metrics, plots and report
text ``medvid.zeroshot.results``; this job reads the config, checks it and wires them.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from medvid.config import load_config, setting
from medvid.datasets.cholec80 import DATASETS, Cholec80
from medvid.device import check_device, resolve_device
from medvid.errors import MedvidError
from medvid.models.checkpoint import load_video_text_model
from medvid.utils import atomic_write_text, jsonable, relative_message
from medvid.zeroshot.evaluate import TOLERANCE_S
from medvid.zeroshot.outputs import ResultsFolder, fingerprint, is_annotated
from medvid.zeroshot.prompts import load_prompt_set
from medvid.zeroshot.recognise import (TASKS, Recogniser, Recognition, apply_preset, check_model_preset,
                                       check_recognition, corpus_path, prompt_file)
from medvid.zeroshot.results import evaluate_phases, evaluate_tools, headline, metrics_record, report_text, write_plots

log = logging.getLogger("medvid")


@dataclass
class Config(Recognition):
    """The job's settings; the recogniser's (``Recognition``: clip, scales, calibration, expansion, adaptation,
    smoothing) come first, with their meanings."""

    task: str = setting("phase", "phase | tools (set by the subcommand)")
    data_root: str = setting("", "Cholec80-layout root, or a folder of videos")
    model: str = setting("", "folder written by save_pretrained")
    out: str = setting("", "output folder")
    prompts: Optional[str] = setting(None, "YAML/JSON prompt file; null = the shipped one for the dataset and task")
    dataset: str = setting("cholec80", "cholec80 | autolaparo: phase names and relaxed-metric exceptions")
    split: Optional[str] = setting(None, "e.g. cholec80_40_8_32:test (SurgVLP family) or cholec80_40_40:test; "
                                         "null = every video in the root")
    max_videos: int = setting(0, "0 = all")
    fps: float = setting(1.0, "evaluation rate")
    tolerance_s: float = setting(TOLERANCE_S, "relaxed metrics: boundary tolerance (M2CAI 2016)")
    cholec80_exceptions: bool = setting(True, "relaxed metrics: Cholec80 transition exceptions (dataset cholec80 "
                                              "only)")
    plots: bool = setting(True, "phase ribbons per video + confusion matrix (PNG)")
    save_embeddings: bool = setting(False, "OUT/embeddings/<video>.npy (always written for phases when adaptation "
                                           "is on)")
    device: str = setting("cpu", "auto | cpu | cuda | cuda:N")
    threads: int = setting(0, "torch intra-op threads; 0 = torch's default")
    overwrite: bool = setting(False, "false: resume (skip videos with predictions); settings must match")
    preset: Optional[str] = setting(None, "a published protocol from presets (surgvlp: SurgVLP's prompts, "
                                          "preprocessing and per-frame argmax); it fixes the settings it names")
    presets: dict[str, Any] = setting(factory=dict, help="named protocols: the settings each fixes "
                                                         "(configs/zero_shot.yaml)")


def _check(cfg: Any) -> None:
    if cfg.task not in TASKS:
        raise MedvidError(f"task must be one of {TASKS}, got {cfg.task!r}")
    for key in ("data_root", "model", "out"):
        if not getattr(cfg, key):
            raise MedvidError(f"{key} is required")
    if not Path(cfg.data_root).is_dir():
        raise MedvidError(f"data_root does not exist or is not a folder: {cfg.data_root}")
    if not (Path(cfg.model) / "config.json").is_file():
        raise MedvidError(f"{cfg.model}: not a medvid model folder (no config.json from save_pretrained)")
    if cfg.dataset not in DATASETS:
        raise MedvidError(f"dataset must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    check_recognition(cfg)
    check_device(cfg.device)


def run(cfg: Any) -> dict:
    cfg = apply_preset(cfg, load_config(Config, "zero_shot"))
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_root)
    prompt_path = prompt_file(cfg.dataset, cfg.task, cfg.prompts)
    ds = Cholec80(root, dataset=cfg.dataset)
    names = ds.videos(cfg.split)
    if cfg.max_videos:
        names = names[:cfg.max_videos]
    if not names:
        raise MedvidError(f"{root}: no videos found" + (f" in split {cfg.split} ({ds.split_hint(cfg.split)}; "
                                                        "choose another split=, or split=null for every video)"
                                                        if cfg.split else ""))
    prompts = load_prompt_set(prompt_path, ds.phases if cfg.task == "phase" else ds.tools)
    corpus = corpus_path(cfg, cfg.model)
    model = load_video_text_model(cfg.model, map_location=resolve_device(cfg.device))  # any video-text kind
    check_model_preset(cfg, model)
    rec = Recogniser(model, cfg.task, prompts, cfg, cfg.fps, corpus)
    sampling = rec.sampling
    out = ResultsFolder(cfg.out)
    out.claim(fingerprint(cfg, prompt_path, corpus, sampling), cfg.overwrite)

    todo = out.todo(names)
    errors: list[dict] = []
    t0 = time.perf_counter()
    if todo:
        head = rec.head  # the prompt embeddings, once for the run
        if rec.expansion is not None:
            out.write_expansion(rec.expansion)
        log.info("zero-shot %s: %d videos to do, %d already done (%d classes)", cfg.task, len(todo),
                 len(names) - len(todo), len(head.classes))
        for i, name in enumerate(todo, 1):
            try:
                out.predict(rec, ds, name, save_embedding=cfg.save_embeddings or rec.adapting)
                log.info("[%d/%d] %s done", i, len(todo), name)
            except (MedvidError, ValueError, RuntimeError) as exc:
                log.error("%s: skipped (%s)", name, relative_message(exc, root))
                errors.append({"video": name, "error": relative_message(exc, root)})
    if errors:
        out.write_errors(errors)
    if rec.adapting:
        log.info("zero-shot phase: self-training over %d videos", out.adapt(rec, names))
    elapsed = time.perf_counter() - t0

    tables = out.tables(names)
    if not tables:
        raise MedvidError(f"zero-shot {cfg.task}: no video could be predicted ({len(errors)} failed); "
                          f"see {out.root / 'errors.jsonl'}")
    annotated = [n for n in names if is_annotated(ds, cfg.task, n)]
    if not annotated:
        folder = "phase_annotations" if cfg.task == "phase" else "tool_annotations"
        log.warning("no annotations found in DATA_ROOT/%s for these videos: predictions only, no metrics "
                    "(is DATA_ROOT the Cholec80-layout root that holds videos/ and %s/?)", folder, folder)
    results, pairs = (evaluate_phases(cfg, tables, prompts.classes) if cfg.task == "phase"
                      else (evaluate_tools(tables, prompts.classes), {}))
    summary = {"task": cfg.task, **({"preset": cfg.preset} if cfg.preset else {}), "videos": len(names), "videos_done": len(tables), "videos_failed": len(errors),
               "videos_annotated": len(annotated), "seconds": round(elapsed, 2), "sampling": sampling}
    if rec.expansion_note:
        summary["expansion"] = rec.expansion_note
    if errors:
        summary["errors"] = str(out.root / "errors.jsonl")
    metrics = metrics_record(cfg, prompt_path, sampling, prompts.classes, results)
    atomic_write_text(out.root / "metrics.json", json.dumps(jsonable(metrics), indent=2))
    if cfg.plots and cfg.task == "phase":
        summary["plots"] = len(write_plots(out.root, cfg.task, tables, prompts.classes, pairs))
    atomic_write_text(out.root / "report.md", report_text(cfg, prompt_path, prompts.classes, metrics, summary))
    summary.update(headline(cfg.task, results))
    return summary
