"""Shared trainer test data: a tiny dual encoder on paired vectors, and the worker script that trains it.

``python tests/tiny_training.py OUT [--steps N ...]`` (or under ``torchrun``) trains ``TinyDual`` with the real
``Trainer``; the kill/resume and multi-process tests launch it. Not a test module: test files import it by name.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]


class PairData(Dataset):
    """Paired vectors: ``y`` is a fixed linear map of ``x`` plus noise (a learnable matching)."""

    def __init__(self, n: int = 256, dim: int = 8, seed: int = 0):
        w = torch.randn(dim, dim, generator=torch.Generator().manual_seed(1234))  # same map for every split
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(n, dim, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class TinyDual(nn.Module):
    """Two small encoders + learnable temperature; ``forward(batch)`` is the InfoNCE loss."""

    def __init__(self, dim: int = 8, dropout: float = 0.0, sleep: float = 0.0):
        super().__init__()
        self.fx = nn.Sequential(nn.Linear(dim, 16), nn.Dropout(dropout), nn.GELU(), nn.Linear(16, 8))
        self.fy = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, 8))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.sleep = sleep

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.fx(x), dim=-1), F.normalize(self.fy(y), dim=-1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        from medvid.training.losses import info_nce

        if self.sleep:
            time.sleep(self.sleep)
        a, b = self.embed(batch["x"], batch["y"])
        return info_nce(a, b, self.logit_scale.exp()), {"temperature": float(1 / self.logit_scale.detach().exp())}


def recall_eval(data: PairData):
    """An ``evaluate`` callback for the trainer: retrieval recall on held-out pairs."""
    from medvid.training.evaluate import retrieval_metrics

    def evaluate(module: TinyDual) -> dict:
        a, b = module.embed(data.x, data.y)
        return retrieval_metrics(a, b)

    return evaluate


def main(argv: list[str] | None = None) -> dict:
    """Worker: train TinyDual with the real Trainer (one process or under torchrun)."""
    from medvid.training.distributed import cleanup
    from medvid.training.trainer import Trainer, TrainConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=5)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    module = TinyDual(dropout=args.dropout, sleep=args.sleep)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, grad_accum=args.accum, lr=3e-3, warmup_steps=3,
                      checkpoint_every=args.ckpt_every, eval_every=args.eval_every, log_every=1, progress=False,
                      device="cpu")
    trainer = Trainer(module, PairData(), cfg, args.out, evaluate=recall_eval(PairData(n=64, seed=1)))
    try:
        return trainer.fit()
    finally:  # as the jobs do: leave the process group before exit (torchrun workers abort otherwise, at times)
        cleanup()


def read_losses(out: Path) -> dict[int, str]:
    """``{step: loss}`` from a run's ``train_log.csv`` (as written, to compare bit for bit)."""
    with open(out / "train_log.csv", newline="") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f)}


def worker_env() -> dict:
    """Environment of a worker subprocess: this checkout's medvid, one OpenMP thread."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


if __name__ == "__main__":
    main()
