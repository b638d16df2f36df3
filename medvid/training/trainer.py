"""The training loop: DDP through ``torchrun``, bf16 autocast, accumulation, clipping, cosine
schedule with warmup, periodic atomic checkpoints and exact resume, TensorBoard + CSV logs.

The trained object is an ``nn.Module`` whose ``forward(batch)`` returns the loss (or
``(loss, {name: value})``); pipelines wrap their models and losses in such a module, so DDP's
gradient hooks see every forward. ``TrainConfig.batch_size`` is the *global* batch of one
micro-step, split evenly over ranks: the same config trains the same model on 1 or N processes.

Resume restores model, optimizer, schedule, RNG states and the position in the epoch's
shuffled order, so the losses after a resume equal those of an uninterrupted run.
"""
from __future__ import annotations

import csv
import logging
import math
import random
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from medvid.config import setting
from medvid.device import PRECISIONS, autocast_dtype
from medvid.errors import MedvidError
from medvid.runs import claim_out
from medvid.training.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from medvid.utils import atomic_path, seed_everything

log = logging.getLogger("medvid")

_CKPT = re.compile(r"step_(\d+)\.pt$")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every training job."""

    max_steps: int = setting(1000, "optimizer steps")
    batch_size: int = setting(32, "global batch of one micro-step (split over ranks)")
    grad_accum: int = setting(1, "micro-steps per optimizer step")
    lr: float = setting(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = setting(0.05, "AdamW weight decay (not on biases, norms, temperatures)")
    warmup_steps: int = setting(100, "linear warmup steps before the cosine decay")
    clip_grad_norm: float = setting(1.0, "gradient norm clip; 0 disables clipping")
    amp: str = setting("auto", f"autocast precision: {' | '.join(PRECISIONS)} (auto = bf16 on a GPU that has it, "
                               "fp32 on a CPU; off = fp32)")
    seed: int = setting(0, "random seed (init, shuffling, dropout)")
    deterministic: bool = setting(True, "deterministic torch algorithms (exact resume)")
    checkpoint_every: int = setting(200, "steps between checkpoints")
    keep_checkpoints: int = setting(2, "checkpoints kept (the oldest are deleted)")
    eval_every: int = setting(200, "steps between evaluations; 0 = evaluate only at the end")
    log_every: int = setting(10, "TensorBoard / progress refresh period in steps (the CSV gets every step)")
    num_workers: int = setting(0, "DataLoader worker processes")
    num_threads: int = setting(0, "torch CPU threads in the loop (0 = the job's default, torch's unless it says)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    progress: bool = setting(True, "show a progress bar")


class EpochSampler(Sampler[int]):
    """Seeded per-epoch shuffle, split over ranks, that can start mid-epoch (for resume).

    The epoch's permutation is cut to a multiple of the global batch; rank ``r`` takes
    ``perm[r::world]``, so the union of the ranks' ``k``-th batches is the single-process
    ``k``-th batch.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, shuffle: bool = True):
        if global_batch % world:
            raise MedvidError(f"train.batch_size {global_batch} is not divisible by the {world} processes")
        if n < global_batch:
            raise MedvidError(f"the training set has {n} items, fewer than one batch of {global_batch}: "
                              "give more data or a smaller train.batch_size")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        perm = perm[: self.batches_per_epoch * self.global_batch][self.start_batch * self.global_batch:]
        return iter(perm[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * (self.global_batch // self.world)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The highest-step ``step_*.pt`` in ``ckpt_dir`` (writes are atomic, so any present file is whole)."""
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).glob("step_*.pt") if (m := _CKPT.search(p.name))]
    return max(found)[1] if found else None


def claim_training_out(out: str | Path, job: str, settings: Mapping[str, Any], resume: bool,
                       write: bool = True) -> None:
    """Claim ``out`` for training job ``job`` (:func:`medvid.runs.claim_out`): a resume needs the same settings,
    ``resume=False`` starts afresh. Jobs call it before writing anything there (caches, ``config.yaml``)."""
    claim_out(out, job, settings, overwrite=not resume,
              has_results=resume and latest_checkpoint(Path(out) / "checkpoints") is not None,
              own=lambda o: (o / "checkpoints").is_dir(), restart="resume=false", write=write)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class CsvLog:
    """Append-only CSV with a fixed header; on resume, rows past the checkpoint step are dropped."""

    def __init__(self, path: Path, fields: Sequence[str], resume_step: int):
        self.path, self.fields = path, list(fields)
        kept: list[dict[str, str]] = []
        if path.exists() and resume_step > 0:
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)


class Trainer:
    """Train ``module`` (``forward(batch) -> loss``) on ``train_data``; writes under ``out_dir``:
    ``checkpoints/step_*.pt``, ``train_log.csv`` (step, loss, lr, samples_per_s), ``eval_log.csv``
    (step, metric, value) and ``tb/`` (TensorBoard: the same plus any logs the module returns)."""

    def __init__(
        self,
        module: nn.Module,
        train_data: Dataset,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        collate_fn: Callable | None = None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        dist_info: DistInfo | None = None,
        settings: Mapping[str, Any] | None = None,
        job: str = "train",
    ):
        self.cfg, self.out = cfg, Path(out_dir)
        self.settings, self.job = settings, job  # what changes results (medvid.runs): a resume must match it
        self.dist = dist_info or init_distributed(cfg.device)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.module = module.to(self.dist.device)
        self.train_data, self.collate_fn, self.evaluate_fn = train_data, collate_fn, evaluate
        self.amp_dtype = autocast_dtype(cfg.amp, self.dist.device, auto_on_cpu=False)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases, norms, temperatures
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr)
        from transformers.optimization import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.max_steps)
        self.sampler = EpochSampler(len(train_data), cfg.batch_size, self.dist.rank, self.dist.world_size, cfg.seed)
        self.step = 0
        self.ckpt_dir = self.out / "checkpoints"

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_N.pt`` atomically (rank 0) and prune old ones."""
        if not self.dist.is_main:
            return None
        state = {"step": self.step, "epoch": self.sampler.epoch, "batch_in_epoch": self._batch_in_epoch,
                 "loss": self._last_loss,
                 "model": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": _rng_state()}
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        old = sorted(p for p in self.ckpt_dir.glob("step_*.pt") if _CKPT.search(p.name))
        for p in old[: max(0, len(old) - self.cfg.keep_checkpoints)]:
            p.unlink(missing_ok=True)
        return path

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and all buffers; frozen weights are rebuilt from the job's config."""
        return {k: v.detach() for k, v in self.module.state_dict(keep_vars=True).items()
                if not isinstance(v, nn.Parameter) or v.requires_grad}

    def load_checkpoint(self, path: str | Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = self.module.load_state_dict(state["model"], strict=False)
        frozen = {k for k, p in self.module.named_parameters() if not p.requires_grad}
        if unexpected or set(missing) - frozen:
            raise RuntimeError(f"{path}: checkpoint does not fit the model (unexpected {unexpected[:5]}, "
                               f"missing {sorted(set(missing) - frozen)[:5]})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._last_loss = float(state.get("loss", float("nan")))
        self.sampler.set_position(int(state["epoch"]), int(state["batch_in_epoch"]))
        self._batch_in_epoch = int(state["batch_in_epoch"])

    # ------------------------------------------------------------------ loop

    def _loader(self) -> DataLoader:
        # A private generator keeps the loader from drawing on the global RNG (exact resume).
        return DataLoader(self.train_data, batch_size=self.cfg.batch_size // self.dist.world_size,
                          sampler=self.sampler, collate_fn=self.collate_fn, num_workers=self.cfg.num_workers,
                          drop_last=True, generator=torch.Generator().manual_seed(self.cfg.seed + self.sampler.epoch),
                          pin_memory=self.dist.device.type == "cuda")

    def _forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        batch = _to_device(batch, self.dist.device)
        ctx = torch.autocast(self.dist.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with ctx:
            out = model(batch)
        loss, logs = out if isinstance(out, tuple) else (out, {})
        return loss, {k: float(v) for k, v in logs.items()}

    def _batches(self) -> Iterator[Any]:
        """Micro-batches forever, epoch after epoch, starting at the restored position."""
        while True:
            for batch in self._loader():
                self._batch_in_epoch += 1
                yield batch
            self.sampler.set_position(self.sampler.epoch + 1, 0)
            self._batch_in_epoch = 0

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train until ``max_steps`` (resuming from the last checkpoint if asked); returns a summary.
        With ``num_threads`` > 0 torch uses that many CPU threads until it returns."""
        threads = torch.get_num_threads()
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        try:
            return self._fit(resume)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, resume: bool) -> dict[str, Any]:
        cfg = self.cfg
        seed_everything(cfg.seed + self.dist.rank)
        self._batch_in_epoch = 0
        self._last_loss = float("nan")
        last = latest_checkpoint(self.ckpt_dir) if resume else None
        if self.settings is not None:
            claim_training_out(self.out, self.job, self.settings, resume, write=self.dist.is_main)
        if last is not None:
            self.load_checkpoint(last)
            log.info("resumed from %s (step %d)", last.name, self.step)
        model: nn.Module = self.module
        if self.dist.distributed:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        writer, train_csv, eval_csv = self._open_logs()
        bar = None
        if self.dist.is_main and cfg.progress:
            from medvid.utils import progress

            bar = progress(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True)
        samples_per_step = cfg.batch_size * cfg.grad_accum
        eval_metrics: dict[str, float] = {}
        batches = self._batches()
        model.train()
        t0 = time.perf_counter()
        while self.step < cfg.max_steps:
            losses, logs = [], {}
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                sync = micro == cfg.grad_accum - 1 or not self.dist.distributed
                with nullcontext() if sync else model.no_sync():
                    loss, logs = self._forward(model, batch)
                    (loss / cfg.grad_accum).backward()
                losses.append(loss.detach())
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.clip_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            loss_value = self._last_loss = float(all_reduce_mean(torch.stack(losses).mean()))
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {self.step}")
            dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            row = {"step": self.step, "loss": repr(loss_value), "lr": self.scheduler.get_last_lr()[0],
                   "samples_per_s": samples_per_step / max(dt, 1e-9), **logs}
            if self.dist.is_main:
                train_csv.write(row)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    for k in ("loss", "lr", "samples_per_s", *logs):
                        writer.add_scalar(f"train/{k}", float(row[k]), self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{row['samples_per_s']:.1f}")
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                eval_metrics = self._evaluate(writer, eval_csv)
                t0 = time.perf_counter()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                self.save_checkpoint()
                barrier()
        eval_metrics = self._evaluate(writer, eval_csv)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        return {"step": self.step, "final_loss": self._last_loss, **{f"val/{k}": v for k, v in eval_metrics.items()}}

    def _evaluate(self, writer: Any, eval_csv: CsvLog) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            self.module.eval()
            with torch.no_grad():
                metrics = self.evaluate_fn(self.module)
            self.module.train()
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, self.step)
            for k, v in metrics.items():
                eval_csv.write({"step": self.step, "metric": k, "value": repr(float(v))})
            log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        barrier()
        return metrics

    def _open_logs(self) -> tuple[Any, CsvLog | None, CsvLog | None]:
        if not self.dist.is_main:
            return None, None, None
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)
        train_csv = CsvLog(self.out / "train_log.csv", ["step", "loss", "lr", "samples_per_s"], self.step)
        eval_csv = CsvLog(self.out / "eval_log.csv", ["step", "metric", "value"], self.step)
        return writer, train_csv, eval_csv


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
