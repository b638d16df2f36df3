"""``medvid probe TASK --model DIR --data ROOT --out DIR``: downstream transfer of a frozen model.

Tasks: ``echo-ef`` (regression), ``echo-phenotypes`` (binary) — the protocol of ``medvid.transfer.echo``,
settings ``echo.*`` — and ``phase`` and ``tools`` (Cholec80 layout, named splits) — ``medvid.transfer.surgery``,
settings ``surgery.*``, its zero-shot the zero-shot job's recogniser (``surgery.recognition.*``). Frozen features
are cached (``cache``, default ``OUT/cache``); the label fractions, k-shot settings and seeds are shared
(``medvid.transfer.protocol``). An EchoNet-Dynamic root is ingested into ``OUT/ingest`` first.

Writes ``OUT/metrics.json``, ``OUT/learning_curve.png``, predictions (``OUT/predictions.csv`` for echo,
``OUT/predictions/<video>.csv`` for surgery); returns a JSON summary.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from medvid.config import require_dirs, setting
from medvid.device import check_device, resolve_device
from medvid.errors import MedvidError
from medvid.ingest import ingested
from medvid.io.echo_videos import is_echonet_root
from medvid.io.ingest_folder import IngestFolder
from medvid.models.clip import VideoTextModel
from medvid.runs import claim_out, run_settings
from medvid.transfer.echo import TASKS as ECHO_TASKS, EchoProbe, check_echo, probe_echo
from medvid.transfer.plots import learning_curve
from medvid.transfer.protocol import Protocol, ProbeResult, check_protocol
from medvid.transfer.surgery import TASKS as SURGERY_TASKS, SurgeryProbe, check_surgery, probe_surgery
from medvid.utils import atomic_path, atomic_write_text, jsonable
from medvid.zeroshot.recognise import check_recognition

log = logging.getLogger("medvid")

TASKS = ECHO_TASKS + SURGERY_TASKS


@dataclass
class Config(Protocol):
    """The job's settings: the shared protocol (fractions, k-shot, seeds, ...) first, then the echo and the
    surgical parts."""

    task: str = setting("echo-ef", "echo-ef | echo-phenotypes | phase | tools (set by the command)")
    model: str = setting("", "folder written by save_pretrained")
    data: str = setting("", "echo: ingest folder or EchoNet-Dynamic root; surgery: Cholec80-layout root")
    out: str = setting("", "output folder")
    cache: str = setting("", "frozen-feature cache folder (share it between tasks); blank = OUT/cache")
    device: str = setting("cpu", "auto | cpu | cuda | cuda:N")
    threads: int = setting(0, "torch intra-op threads; 0 = torch's default")
    overwrite: bool = setting(False, "true: replace results an earlier run with other settings wrote in OUT (only a "
                                     "folder medvid probe wrote); false: such a run is refused")
    echo: EchoProbe = setting(factory=EchoProbe, help="echo tasks (EchoNet-Dynamic protocol)")
    surgery: SurgeryProbe = setting(factory=SurgeryProbe, help="phase and tools tasks")


def _check(cfg: Any) -> None:
    if cfg.task not in TASKS:
        raise MedvidError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if not cfg.out:
        raise MedvidError("out is required")
    require_dirs(model=cfg.model, data=cfg.data)
    check_device(cfg.device)
    check_protocol(cfg)
    check_echo(cfg.echo)
    check_surgery(cfg.surgery)
    check_recognition(cfg.surgery.recognition)
    if cfg.echo.finetune and cfg.task != "echo-ef":
        raise MedvidError("finetune applies to echo-ef (phases and tools have temporal_head)")


def _echo_source(cfg: Any, out: Path) -> tuple[Path, Path]:
    """(ingest folder, root of its files); an EchoNet-Dynamic root is ingested into OUT/ingest first."""
    data = Path(cfg.data)
    if not IngestFolder(data).exists() and not is_echonet_root(data):
        raise MedvidError(f"{data}: neither an ingest folder (videos.parquet) nor an EchoNet-Dynamic root "
                          "(FileList.csv)")
    return ingested(data, cfg.echo.video_root, out / "ingest", progress=cfg.progress, root_setting="echo.video_root")


def _write(out: Path, result: ProbeResult, title: str, fractions: list[float]) -> None:
    for name, table in result.tables.items():
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, index=False, float_format="%.5g")
    learning_curve(out / "learning_curve.png", fractions, result.curves, result.lines, result.ylabel, title)


def run(cfg: Any) -> dict:
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    claim_out(out, "probe", run_settings(cfg, ignore=("out", "cache", "device", "threads", "progress", "overwrite")),
              overwrite=cfg.overwrite, own=lambda o: (o / "metrics.json").is_file())
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    model = VideoTextModel.from_pretrained(cfg.model, map_location=device).eval()
    cache = Path(cfg.cache) if cfg.cache else out / "cache"
    if cfg.task in ECHO_TASKS:
        ingest_dir, video_root = _echo_source(cfg, out)
        result = probe_echo(cfg.task, model, ingest_dir, video_root, cfg, cfg.echo, cache, device)
    else:
        result = probe_surgery(cfg.task, model, cfg.model, cfg.data, cfg, cfg.surgery, cache)
    _write(out, result, f"{cfg.task}: {Path(cfg.model).name}", list(cfg.fractions))
    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(vars(cfg))
    metrics = {**result.metrics, "task": cfg.task, "model": Path(cfg.model).resolve().name,
               "settings": {k: v for k, v in settings.items() if k not in ("model", "data", "out")}}
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2))
    summary = {"task": cfg.task, "out": str(out), "seconds": round(time.perf_counter() - t0, 1),
               "headline_metric": metrics["headline_metric"], **metrics["headline"]}
    log.info("probe %s: %s", cfg.task, summary)
    return jsonable(summary)
