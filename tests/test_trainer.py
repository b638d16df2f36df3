"""Trainer: learning on a tiny dual encoder, exact resume after SIGKILL, sampler and schedule.

The worker script that the kill/resume and multi-process tests launch is ``tests/tiny_training.py``.
"""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medvid.errors import MedvidError
from tiny_training import SCRIPT, PairData, TinyDual, main, read_losses, worker_env

PY = sys.executable


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
    subprocess.run([PY, str(SCRIPT), str(ref), *args], check=True, env=worker_env(), timeout=300)
    proc = subprocess.Popen([PY, str(SCRIPT), str(run), *args, "--sleep", "0.1"], env=worker_env())
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
    subprocess.run([PY, str(SCRIPT), str(run), *args], check=True, env=worker_env(), timeout=300)
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
    with pytest.raises(MedvidError, match="not divisible"):
        EpochSampler(20, 7, 0, 2, 0)
    with pytest.raises(MedvidError, match="fewer than one batch of 32: give more data or a smaller train.batch_size"):
        EpochSampler(8, 32, 0, 1, 0)  # a user error, one line (was a raw ValueError traceback)


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
    from medvid.training.feature_cache import FeatureCache, build_feature_cache, dataset_clips

    data = ClipData()
    keys = [f"v{i}" for i in range(len(data))]
    clip_fn = lambda item: (item["video"], None)  # noqa: E731
    kw = dict(n_frames=4, feature_dim=5, batch_size=3, progress=False)
    cache = build_feature_cache(_encode, keys, dataset_clips(data, clip_fn), tmp_path / "full", {"v": 1}, **kw)
    assert len(cache) == 10 and cache.feature_dim == 5
    for i in (0, 3, 9):
        feats, mask = cache[f"v{i}"]
        n = data.lengths[i]
        assert mask.tolist() == [True] * n + [False] * (4 - n)
        want = _encode(data.clips[i, :, :n].permute(1, 0, 2, 3))
        torch.testing.assert_close(feats[:n], want, atol=2e-3, rtol=2e-3)  # stored as float16
        assert feats[n:].abs().sum() == 0
    assert isinstance(cache.features, np.memmap)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["features.npy", "keys.json", "mask.npy",
                                                                      "meta.json"]

    calls = []

    def crashing(item):
        calls.append(item["key"])
        if len(calls) == 7:
            raise RuntimeError("killed")
        return clip_fn(item)

    with pytest.raises(RuntimeError):
        build_feature_cache(_encode, keys, dataset_clips(data, crashing), tmp_path / "part", {"v": 1}, **kw)
    assert not (tmp_path / "part" / "meta.json").exists()
    progress = (tmp_path / "part" / "progress.json").read_text()
    assert len(progress) < 300  # written once, never the per-row state
    calls.clear()
    resumed = build_feature_cache(_encode, keys, dataset_clips(data, crashing), tmp_path / "part", {"v": 1}, **kw)
    assert calls[0] == "v6"  # the two flushed chunks (6 clips) were not recomputed
    assert resumed.keys == cache.keys
    assert (resumed.features == cache.features).all() and (resumed.mask == cache.mask).all()
    calls.clear()
    build_feature_cache(_encode, keys, dataset_clips(data, crashing), tmp_path / "part", {"v": 1}, **kw)
    assert calls == []  # same fingerprint: reused
    build_feature_cache(_encode, keys, dataset_clips(data, clip_fn), tmp_path / "part", {"v": 2}, **kw)
    assert FeatureCache(tmp_path / "part").meta["fingerprint"] == {"v": 2}
    # rows streamed out of order land in their own rows
    shuffled = lambda rows: ((r, *clip_fn(data[r])) for r in reversed(list(rows)))  # noqa: E731
    again = build_feature_cache(_encode, keys, shuffled, tmp_path / "rev", {"v": 1}, **kw)
    assert (again.features == cache.features).all() and (again.mask == cache.mask).all()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "meta.json").write_text('{"owner": "someone else"}')
    with pytest.raises(MedvidError, match="not a medvid feature cache"):
        build_feature_cache(_encode, keys, dataset_clips(data, clip_fn), mine, {"v": 1}, **kw)
    assert (mine / "meta.json").read_text() == '{"owner": "someone else"}'  # a folder that is not ours: untouched


@pytest.fixture(scope="module")
def lecture_pairs(tmp_path_factory):
    """One 8 s lecture (10 fps, every frame a different colour) and overlapping clip pairs."""
    from medvid.io.video import write_video
    from medvid.utils import write_jsonl

    root = tmp_path_factory.mktemp("lecture")
    frames = [np.full((48, 64, 3), (3 * i, 255 - 3 * i, (7 * i) % 256), np.uint8) for i in range(80)]
    write_video(root / "talk.mp4", frames, fps=10, gop=10)
    write_video(root / "other.mp4", frames[::-1], fps=10, gop=10)
    rows = [{"pair_id": f"p{k}", "video": "talk.mp4" if k % 3 else "other.mp4", "start": s, "end": s + 2.0,
             "text": f"sentence {k}", "extra_texts": []}
            for k, s in enumerate([0.0, 5.5, 1.0, 0.5, 3.0, 6.1, 2.2, 4.0, 1.6])]
    write_jsonl(root / "pairs.jsonl", rows)
    return root


@pytest.mark.parametrize("read_frames", [2, 64])
def test_lecture_clips_decoded_video_by_video_equal_random_access(lecture_pairs, read_frames):
    from medvid.datasets.lectures import LecturePairDataset

    ds = LecturePairDataset(lecture_pairs / "pairs.jsonl", lecture_pairs, num_frames=3, fps=2.0,
                            preprocess="imagenet", random_start=False)
    got = dict(ds.iter_clips(read_frames=read_frames))
    assert sorted(got) == list(range(len(ds)))
    for i, clip in got.items():
        torch.testing.assert_close(clip, ds[i]["video"], atol=0, rtol=0)
    subset = [7, 2, 4]
    assert sorted(i for i, _ in ds.iter_clips(subset)) == sorted(subset)
    shards = [[i for i, _ in ds.iter_clips(shard=(k, 2))] for k in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(len(ds))) and not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_cache_clips_ordered_decoding_gives_the_per_item_features(lecture_pairs, tmp_path, workers):
    from medvid.datasets.lectures import LecturePairDataset
    from medvid.training.feature_cache import build_feature_cache, cache_clips, dataset_clips

    ds = LecturePairDataset(lecture_pairs / "pairs.jsonl", lecture_pairs, num_frames=3, fps=2.0,
                            preprocess="imagenet", random_start=False)
    keys = [p["pair_id"] for p in ds.pairs]
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    fast = cache_clips(backbone, 4, ds, keys, tmp_path / "fast", {"t": 1}, n_frames=3, batch_size=4,
                       num_workers=workers, progress=False)
    slow = build_feature_cache(backbone, keys, dataset_clips(ds, lambda item: (item["video"], None)),
                               tmp_path / "slow", {"t": 1}, n_frames=3, feature_dim=4, batch_size=4, progress=False)
    assert fast.keys == slow.keys == keys
    np.testing.assert_allclose(np.asarray(fast.features, np.float32), np.asarray(slow.features, np.float32),
                               atol=1e-3)
    assert fast.mask.all()


def test_chunked_retrieval_metrics_equal_the_full_matrix():
    from medvid.metrics import recall_at_k
    from medvid.training.evaluate import retrieval_metrics

    g = torch.Generator().manual_seed(0)
    v = torch.randn(301, 16, generator=g)
    t = v + torch.randn(301, 16, generator=g)
    t[5] = t[9]  # a tie: counted in the query's favour both ways
    sim = F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).T
    chunked = retrieval_metrics(v, t, chunk=7)
    assert chunked == pytest.approx(retrieval_metrics(None, None, sim=sim), abs=1e-6)
    assert chunked["text_to_video_recall@5"] == pytest.approx(recall_at_k(sim.T, torch.arange(301), (5,))["recall@5"])


def test_num_threads_holds_for_the_loop_only(tmp_path):
    from medvid.training.trainer import Trainer, TrainConfig

    seen, before = [], torch.get_num_threads()
    torch.set_num_threads(2)

    class Probe(TinyDual):
        def forward(self, batch):
            seen.append(torch.get_num_threads())
            return super().forward(batch)

    cfg = TrainConfig(max_steps=2, batch_size=16, warmup_steps=1, checkpoint_every=10, eval_every=0, progress=False,
                      device="cpu", num_threads=1)
    Trainer(Probe(), PairData(), cfg, tmp_path).fit()
    assert seen == [1, 1] and torch.get_num_threads() == 2
    torch.set_num_threads(before)


def test_pretrain_trains_cached_features_on_one_cpu_thread():
    from medvid.config import load_config
    from medvid.pipelines import pretrain
    from medvid.training.pretrain import loop_config

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    cfg = load_config(pretrain.Config, "surgical_pretrain")
    assert loop_config(cfg, cpu).num_threads == 1
    assert loop_config(cfg, gpu).num_threads == 0
    assert loop_config(load_config(pretrain.Config, "surgical_pretrain", overrides=["train.num_threads=2"]),
                       cpu).num_threads == 2
    assert loop_config(load_config(pretrain.Config, "surgical_pretrain",
                                   overrides=["frozen_backbone=false"]), cpu).num_threads == 0
    assert cfg.train.num_threads == 0  # the recorded settings keep what the user wrote


def test_amp_speaks_the_one_precision_vocabulary(tmp_path):
    """``train.amp`` is a ``medvid.device`` precision: auto stays fp32 on a CPU, ``off`` is read as fp32."""
    from medvid.errors import MedvidError
    from medvid.training.trainer import Trainer, TrainConfig

    def dtype(amp: str):
        cfg = TrainConfig(max_steps=1, batch_size=16, device="cpu", amp=amp, progress=False)
        return Trainer(TinyDual(), PairData(), cfg, tmp_path / amp).amp_dtype

    assert dtype("off") is None and dtype("fp32") is None and dtype("auto") is None
    assert dtype("bf16") is torch.bfloat16
    with pytest.raises(MedvidError, match="precision must be one of auto, fp32, bf16"):
        dtype("fp8")
