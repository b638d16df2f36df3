"""Frozen features for transfer, computed once per model and data set.

* Echo: the backbone features of every ``frame_stride``-th frame of each loop are cached once
  (``medvid.training.feature_cache.cache_clips``: memory-mapped ``[videos, T, F]``); clips are then
  windows of ``clip_frames`` consecutive cached features (EchoNet-Dynamic: 32 frames at stride 2,
  every start position), embedded by the model's temporal module and projection
  (``encode_video_from_features``) or summarised as backbone mean ‖ std (``backbone_stats``).
* Surgery: backbone features every ``1/fps`` s of each video (``medvid.zeroshot.embed.frame_features``)
  cached as ``<video>.npz`` beside a fingerprint; embeddings per second through the temporal module
  over a centred window (``medvid.zeroshot.embed.clip_windows``), as the zero-shot job computes them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medvid.datasets.cholec80 import Cholec80
from medvid.datasets.echo import load_clip
from medvid.io.echo_videos import open_loop
from medvid.io.ingest_folder import IngestFolder
from medvid.io.video import Video
from medvid.training.feature_cache import FeatureCache, cache_clips, module_digest
from medvid.transforms.clip import ClipPreprocess
from medvid.utils import atomic_path, atomic_write_text, resolve_under
from medvid.zeroshot.embed import clip_windows, frame_features

FEATURES = ("embedding", "backbone_stats")


class EchoLoopFrames(Dataset):
    """Every ``frame_stride``-th frame of each loop (up to ``max_frames`` of them), sector-masked and
    preprocessed: items ``{"video": (3, t, H, W)}``, in the order of ``videos`` rows."""

    def __init__(self, ingest_dir: str | os.PathLike, video_root: str | os.PathLike, videos: pd.DataFrame,
                 frame_stride: int, max_frames: int, preprocess: ClipPreprocess):
        self.root, self.videos = Path(video_root), videos.reset_index(drop=True)
        self.frame_stride, self.max_frames, self.preprocess = frame_stride, max_frames, preprocess
        self.paths = (dict(zip(videos["video_key"], videos["path"])) if "path" in videos
                      else IngestFolder(ingest_dir).video_paths())

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.videos.iloc[i]
        loop = open_loop(resolve_under(self.root, self.paths[row["video_key"]]))
        idx = np.arange(0, loop.n_frames, self.frame_stride)[:self.max_frames]
        box = row.get("sector_box")
        return {"video": load_clip(loop, idx, "box", None if box is None else list(box), self.preprocess)}


def echo_frame_cache(model: Any, ingest_dir: str | os.PathLike, video_root: str | os.PathLike, videos: pd.DataFrame,
                     cache_dir: str | os.PathLike, frame_stride: int = 2, max_frames: int = 128, batch_size: int = 4,
                     device: str = "cpu", progress: bool = True) -> FeatureCache:
    """Backbone features of every ``frame_stride``-th frame of each loop, cached under ``cache_dir`` (reused when the
    backbone, preprocessing, sampling and loops are unchanged)."""
    preprocess = model.preprocess()
    n = int(min(max_frames, np.ceil(videos["frames"].max() / frame_stride)))
    data = EchoLoopFrames(ingest_dir, video_root, videos, frame_stride, n, preprocess)
    # "period" is the key existing caches were fingerprinted with
    fingerprint = {"kind": "echo-loop-frames", "period": frame_stride, "preprocess": repr(preprocess)}
    return cache_clips(model.video.backbone, model.video.feature_dim, data, list(videos["video_key"]), cache_dir,
                       fingerprint, n_frames=n, batch_size=batch_size, device=device, progress=progress)


def clip_starts(n_valid: int, clip_frames: int, step: int = 1) -> np.ndarray:
    """Start positions of every ``clip_frames`` window in ``n_valid`` samples (one at 0 when shorter)."""
    return np.arange(0, max(n_valid - clip_frames, 0) + 1, step)


@torch.no_grad()
def echo_clip_features(model: Any, feats: torch.Tensor, mask: torch.Tensor, clip_frames: int = 32, step: int = 1,
                       kind: str = "embedding") -> np.ndarray:
    """Features ``[W, D]`` of every clip of one cached loop (``feats [T, F]``, ``mask [T]``)."""
    if kind not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {kind!r}")
    n_valid = int(mask.sum())
    starts = clip_starts(n_valid, clip_frames, step)
    idx = torch.from_numpy(starts[:, None] + np.arange(clip_frames)[None, :]).clamp_max(feats.shape[0] - 1)
    windows, wmask = feats[idx], mask[idx] & (idx < n_valid)
    if kind == "backbone_stats":
        w = wmask.unsqueeze(-1).float()
        mean = (windows * w).sum(1) / w.sum(1)
        sd = (((windows - mean[:, None]) ** 2 * w).sum(1) / w.sum(1)).sqrt()
        return torch.cat([mean, sd], dim=1).numpy()
    device = next(model.parameters()).device
    return torch.cat([model.encode_video_from_features(windows[i:i + 64].to(device), wmask[i:i + 64].to(device))
                      .float().cpu() for i in range(0, len(windows), 64)]).numpy()


def surgery_frame_features(model: Any, ds: Cholec80, names: Sequence[str], cache_dir: str | os.PathLike,
                           fps: float = 1.0, batch_size: int = 32) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """``{video: (times [N], backbone features [N, F])}`` every ``1/fps`` s, computed once per video and model."""
    cache_dir = Path(cache_dir)
    preprocess = model.preprocess()
    fingerprint = {"backbone": module_digest(model.video.backbone), "fps": fps, "preprocess": repr(preprocess)}
    tag = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir / tag
    atomic_write_text(folder / "fingerprint.json", json.dumps(fingerprint, indent=1))
    out = {}
    for name in names:
        path = folder / f"{name}.npz"
        if not path.is_file():
            with Video(ds.video_path(name)) as video:
                times, feats = frame_features(model, video, fps, preprocess, batch_size)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, times=times, feats=feats.numpy().astype(np.float16))
        with np.load(path) as z:
            out[name] = (z["times"], torch.from_numpy(z["feats"].astype(np.float32)))
    return out


@torch.no_grad()
def surgery_embeddings(model: Any, feats: torch.Tensor, clip_frames: int = 1) -> np.ndarray:
    """Normalised embeddings ``[N, D]`` per sample, over the ``clip_frames`` samples centred on it."""
    if len(feats) == 0:
        return np.zeros((0, model.embed_dim), np.float32)
    device = next(model.parameters()).device
    win = torch.from_numpy(clip_windows(len(feats), 1, clip_frames))
    return torch.cat([model.encode_video_from_features(feats[w].to(device)).float().cpu()
                      for w in win.split(256)]).numpy()
