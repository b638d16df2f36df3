"""``medvid pretrain CONFIG``: contrastive pretraining, echo (study ↔ report) or surgical (clip ↔ speech).

One process, or several under ``torchrun`` (same command). With ``frozen_backbone: true`` frame
features are computed once into a memory-mapped cache and training runs on them (fits a CPU);
``false`` fine-tunes end to end on decoded clips (for GPUs). With ``locked_text: true`` the text
transformer is frozen (its features cached, LiT-style) and only its projection trains.

Writes ``OUT/model/`` (``save_pretrained`` + ``train_config.yaml`` + for echo the learned
section × view attention), ``OUT/config.yaml``, ``OUT/metrics.json``, logs and checkpoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvid.config import require_dirs, save_config
from medvid.device import check_device
from medvid.errors import MedvidError
from medvid.runs import TRAINING_BOOKKEEPING, run_settings
from medvid.training.distributed import barrier, cleanup, init_distributed
from medvid.training.objectives import ALIGNMENTS
from medvid.training.pretrain import PretrainSettings, build_model, loop_config, pretrain_task, save_model
from medvid.training.trainer import Trainer, claim_training_out
from medvid.utils import atomic_write_text, seed_everything


@dataclass
class Config(PretrainSettings):
    """``medvid pretrain``'s settings: :class:`medvid.training.pretrain.PretrainSettings`."""


def _check_inputs(cfg: Config) -> None:
    """Refuse a wrong task, missing inputs or an unusable device before any model is built."""
    if cfg.task not in ("echo", "surgical"):
        raise MedvidError(f"task must be echo or surgical, got {cfg.task!r}")
    if cfg.task == "echo":
        require_dirs(**{"echo.ingest_dir": cfg.echo.ingest_dir, "echo.dicom_root": cfg.echo.dicom_root})
    else:
        require_dirs(**{"lectures.root": cfg.lectures.root})
        if cfg.lectures.alignment not in ALIGNMENTS:
            raise MedvidError(f"lectures.alignment must be one of {ALIGNMENTS}, got {cfg.lectures.alignment!r}")
        if not cfg.lectures.pairs or not Path(cfg.lectures.pairs).is_file():
            raise MedvidError(f"lectures.pairs does not exist (pairs.jsonl from `medvid lectures index`): "
                              f"{cfg.lectures.pairs!r}")
    if cfg.init_from and not Path(cfg.init_from).is_dir():
        raise MedvidError(f"init_from does not exist or is not a folder: {cfg.init_from}")
    check_device(cfg.train.device)


def run(cfg: Config) -> dict[str, Any]:
    """Pretrain, evaluate on the held-out splits (and the untrained model, for reference), save."""
    _check_inputs(cfg)
    dist = init_distributed(cfg.train.device)
    out = Path(cfg.out)
    settings = run_settings(cfg, TRAINING_BOOKKEEPING)
    try:
        claim_training_out(out, "pretrain", settings, cfg.resume, write=dist.is_main)
        seed_everything(cfg.train.seed)
        task = pretrain_task(cfg, dist.device, build_model(cfg))
        task.objective.to(dist.device)
        splits = task.splits
        if len(splits["train"]) < cfg.train.batch_size:
            raise MedvidError(f"{len(splits['train'])} training items, fewer than train.batch_size="
                              f"{cfg.train.batch_size}")
        if dist.is_main:
            save_config(cfg, out / "config.yaml")
        untrained = task.score(splits["test"]) if dist.is_main else {}
        trainer = Trainer(task.objective, splits["train"], loop_config(cfg, dist.device), out, dist_info=dist,
                          evaluate=(lambda m: task.score(splits["val"])) if len(splits["val"]) > 1 else None,
                          settings=settings, job="pretrain")
        summary = trainer.fit(resume=cfg.resume)
        result: dict[str, Any] = {"task": cfg.task, "out": str(out), "steps": summary["step"],
                                  "final_loss": summary["final_loss"],
                                  "items": {sp: len(d) for sp, d in splits.items()}}
        if dist.is_main:
            result["test"] = task.score(splits["test"])
            result["test_untrained"] = untrained
            result["val"] = {k[4:]: v for k, v in summary.items() if k.startswith("val/")}
            save_model(cfg, task.objective, out, result)
            atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
        barrier()
        return result if dist.is_main else {}  # one summary per job, not per rank
    finally:
        cleanup()
