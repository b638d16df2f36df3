"""Trainer: learning on a tiny dual encoder, exact resume after SIGKILL, sampler and schedule.

This file doubles as the worker script (``python tests/test_trainer.py OUT ...`` or under
``torchrun``) that the kill/resume and multi-process tests launch.
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


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
        from medvid.losses import info_nce

        if self.sleep:
            time.sleep(self.sleep)
        a, b = self.embed(batch["x"], batch["y"])
        return info_nce(a, b, self.logit_scale.exp()), {"temperature": float(1 / self.logit_scale.detach().exp())}


def recall_eval(data: PairData):
    from medvid.training.evaluate import retrieval_metrics

    def evaluate(module: TinyDual) -> dict:
        a, b = module.embed(data.x, data.y)
        return retrieval_metrics(a, b)

    return evaluate


def main(argv: list[str] | None = None) -> dict:
    """Worker: train TinyDual with the real Trainer (one process or under torchrun)."""
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
    return trainer.fit()


def read_losses(out: Path) -> dict[int, str]:
    with open(out / "train_log.csv", newline="") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f)}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_tiny_model_learns_and_logs(tmp_path):
    summary = main([str(tmp_path), "--steps", "60", "--ckpt-every", "20", "--eval-every", "30"])
    losses = read_losses(tmp_path)
    assert len(losses) == 60
    first, last = float(losses[1]), float(losses[60])
    assert last < 0.6 * first, (first, last)
    # held-out pairs: chance recall@1 is 1/64; a learned matching retrieves most of them.
    assert summary["val/text_to_video_recall@1"] > 0.2
    assert summary["val/video_to_text_recall@5"] > 0.5
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["step_00000040.pt",
                                                                               "step_00000060.pt"]
    with open(tmp_path / "eval_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["step"] for r in rows} == {"30", "60"}
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_kill_and_resume_gives_identical_losses(tmp_path):
    """SIGKILL a training subprocess mid-run, rerun the same command: it resumes from the last
    checkpoint and every later loss equals the uninterrupted run's, to the last bit."""
    args = ["--steps", "40", "--ckpt-every", "5", "--dropout", "0.2", "--accum", "2", "--batch", "16"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run([PY, __file__, str(ref), *args], check=True, env=_env(), timeout=300)
    proc = subprocess.Popen([PY, __file__, str(run), *args, "--sleep", "0.1"], env=_env())
    deadline = time.time() + 240
    while time.time() < deadline:
        if (run / "train_log.csv").exists() and len(read_losses(run)) >= 13:
            break
        assert proc.poll() is None, "worker ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(read_losses(run))
    assert 13 <= killed_at < 40
    subprocess.run([PY, __file__, str(run), *args], check=True, env=_env(), timeout=300)
    got, want = read_losses(run), read_losses(ref)
    assert sorted(got) == list(range(1, 41))
    assert got == want


def test_epoch_sampler_splits_global_batches_and_resumes():
    from medvid.training.trainer import EpochSampler

    single = list(EpochSampler(20, 8, rank=0, world=1, seed=3))
    r0, r1 = list(EpochSampler(20, 8, 0, 2, 3)), list(EpochSampler(20, 8, 1, 2, 3))
    assert len(single) == 16 and len(r0) == len(r1) == 8
    for k in range(2):  # the union of the ranks' k-th batches is the single process's k-th batch
        assert sorted(r0[4 * k:4 * k + 4] + r1[4 * k:4 * k + 4]) == sorted(single[8 * k:8 * k + 8])
    s = EpochSampler(20, 8, 0, 1, 3)
    s.set_position(0, 1)
    assert list(s) == single[8:]
    s.set_position(1, 0)
    assert list(s) != single  # a new epoch reshuffles
    with pytest.raises(ValueError):
        EpochSampler(20, 7, 0, 2, 0)


def test_cosine_schedule_with_warmup(tmp_path):
    from medvid.training.trainer import Trainer, TrainConfig

    cfg = TrainConfig(max_steps=20, batch_size=8, lr=1.0, warmup_steps=5, progress=False, device="cpu")
    t = Trainer(TinyDual(), PairData(64), cfg, tmp_path)
    lrs = []
    for _ in range(20):
        lrs.append(t.scheduler.get_last_lr()[0])
        t.optimizer.step()
        t.scheduler.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0)
    assert lrs[:6] == sorted(lrs[:6]) and lrs[5:] == sorted(lrs[5:], reverse=True)
    assert lrs[-1] < 0.05


class ClipData(Dataset):
    """Clips [3, T, 4, 4] with a varying number of real frames."""

    def __init__(self, n: int = 10):
        g = torch.Generator().manual_seed(0)
        self.clips = torch.randn(n, 3, 4, 4, 4, generator=g)
        self.lengths = [1 + i % 4 for i in range(n)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        return {"key": f"v{i}", "video": self.clips[i, :, : self.lengths[i]]}


def _encode(frames: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] -> [N,5], a fixed "backbone"
    return torch.cat([frames.mean((2, 3)), frames.amax((1, 2, 3))[:, None], frames.std((1, 2, 3))[:, None]], 1)


def test_feature_cache_build_read_resume_and_reuse(tmp_path):
    from medvid.errors import MedvidError
    from medvid.training.feature_cache import FeatureCache, build_feature_cache

    data = ClipData()
    clip_fn = lambda item: (item["key"], item["video"], None)  # noqa: E731
    kw = dict(n_frames=4, feature_dim=5, batch_size=3, progress=False)
    cache = build_feature_cache(_encode, data, clip_fn, tmp_path / "full", {"v": 1}, **kw)
    assert len(cache) == 10 and cache.feature_dim == 5
    for i in (0, 3, 9):
        feats, mask = cache[f"v{i}"]
        n = data.lengths[i]
        assert mask.tolist() == [True] * n + [False] * (4 - n)
        want = _encode(data.clips[i, :, :n].permute(1, 0, 2, 3))
        torch.testing.assert_close(feats[:n], want, atol=2e-3, rtol=2e-3)  # stored as float16
        assert feats[n:].abs().sum() == 0
    assert isinstance(cache.features, np.memmap)

    calls = []

    def crashing(item):
        calls.append(item["key"])
        if len(calls) == 7:
            raise RuntimeError("killed")
        return clip_fn(item)

    with pytest.raises(RuntimeError):
        build_feature_cache(_encode, data, crashing, tmp_path / "part", {"v": 1}, **kw)
    assert not (tmp_path / "part" / "meta.json").exists()
    calls.clear()
    resumed = build_feature_cache(_encode, data, crashing, tmp_path / "part", {"v": 1}, **kw)
    assert calls[0] == "v6"  # the two flushed chunks (6 clips) were not recomputed
    assert resumed.keys == cache.keys
    assert (resumed.features == cache.features).all()
    calls.clear()
    build_feature_cache(_encode, data, crashing, tmp_path / "part", {"v": 1}, **kw)
    assert calls == []  # same fingerprint: reused
    build_feature_cache(_encode, data, clip_fn, tmp_path / "part", {"v": 2}, **kw)
    assert FeatureCache(tmp_path / "part").meta["fingerprint"] == {"v": 2}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "meta.json").write_text('{"owner": "someone else"}')
    with pytest.raises(MedvidError, match="not a medvid feature cache"):
        build_feature_cache(_encode, data, clip_fn, mine, {"v": 1}, **kw)
    assert (mine / "meta.json").read_text() == '{"owner": "someone else"}'  # a folder that is not ours: untouched


def test_resolve_amp():
    from medvid.training.trainer import resolve_amp

    assert resolve_amp("off", torch.device("cpu")) is None
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError):
        resolve_amp("fp8", torch.device("cpu"))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
