"""``medvid train-views``: supervised echo view classifier from an ingest folder and its ``views.csv``.

Labels: ``DIR/views.csv`` (``video_key,view``, re-keyed at ingest) or the ``view`` column of
``videos.parquet``. Splits: the ingest's per-study split (train / val / test). Class-balanced
sampling (every view equally often per epoch). With ``frozen_backbone: true`` the head trains on
cached frame features; the saved classifier then shares its backbone with the default video model,
so ``medvid pretrain ... echo.view_source=classifier`` can reuse the same feature cache.

Writes ``OUT/model/`` (``save_pretrained`` + ``train_config.yaml``), ``OUT/metrics.json`` (accuracy,
balanced accuracy, confusion matrix per held-out split), ``OUT/confusion_<split>.csv``, logs, checkpoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvid.config import require_dirs, save_config
from medvid.errors import MedvidError
from medvid.models.checkpoint import record_training_input
from medvid.runs import TRAINING_BOOKKEEPING, run_settings
from medvid.training.distributed import cleanup, init_distributed
from medvid.training.trainer import Trainer, claim_training_out
from medvid.training.views import (ViewSettings, build_classifier, sampling, scores, training_record, view_splits,
                                   write_confusion)
from medvid.utils import atomic_write_text, seed_everything


@dataclass
class Config(ViewSettings):
    """``medvid train-views``' settings: :class:`medvid.training.views.ViewSettings`."""


def run(cfg: Config) -> dict[str, Any]:
    from medvid.training.data import ClassBalanced
    from medvid.training.objectives import ViewClassification

    require_dirs(ingest_dir=cfg.ingest_dir, dicom_root=cfg.dicom_root)
    dist = init_distributed(cfg.train.device)
    out = Path(cfg.out)
    try:
        seed_everything(cfg.train.seed)
        clf = build_classifier(cfg)
        s = sampling(cfg, clf)
        cfg.n_frames, cfg.target_fps, cfg.frame_stride, cfg.mask = s.num_frames, s.fps, s.frame_stride, s.mask  # as used
        if cfg.frozen_backbone:
            clf.freeze_backbone()
        settings = run_settings(cfg, TRAINING_BOOKKEEPING)
        claim_training_out(out, "train-views", settings, cfg.resume, write=dist.is_main)
        splits = view_splits(cfg, clf, s, dist.device)
        train = splits["train"]
        if len(train) == 0:
            raise MedvidError("no labelled loop in the train split")
        if cfg.balanced:
            train = ClassBalanced(train, [y for _, y in train.items], seed=cfg.train.seed)
        objective = ViewClassification(clf).to(dist.device)
        n = clf.num_classes

        def evaluate(module: ViewClassification) -> dict[str, float]:
            s = scores(module, splits["val"], n, cfg.eval_batch, dist.device)
            return {k: v for k, v in s.items() if k != "confusion"}

        trainer = Trainer(objective, train, cfg.train, out, dist_info=dist,
                          evaluate=evaluate if len(splits["val"]) else None,
                          settings=settings, job="train-views")
        summary = trainer.fit(resume=cfg.resume)
        result: dict[str, Any] = {"out": str(out), "steps": summary["step"], "final_loss": summary["final_loss"],
                                  "labels": clf.labels, "items": {sp: len(d) for sp, d in splits.items()}}
        if dist.is_main:
            objective.eval()
            with torch.no_grad():
                for sp in ("val", "test"):
                    if len(splits[sp]):
                        result[sp] = scores(objective, splits[sp], n, cfg.eval_batch, dist.device)
                        write_confusion(out / f"confusion_{sp}.csv", result[sp]["confusion"], clf.labels)
            record_training_input(clf, s)  # as trained
            clf.save_pretrained(out / "model", training_record(cfg, result))
            save_config(cfg, out / "model" / "train_config.yaml")
            save_config(cfg, out / "config.yaml")
            atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
        if not dist.is_main:
            return {}  # one summary per job, not per rank
        return {k: ({kk: vv for kk, vv in v.items() if kk != "confusion"} if isinstance(v, dict) and "confusion" in v
                    else v) for k, v in result.items()}
    finally:
        cleanup()
