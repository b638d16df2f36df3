"""Embed a whole video at a regular rate for zero-shot scoring, each frame through the backbone once.

Frames are decoded at ``clip_fps`` (a background thread decodes the next batch while the backbone
runs), preprocessed as one batch, and turned into backbone features. Each output time (every
``1/fps`` s) then gets a clip embedding from the ``clip_frames`` features centred on it, through
the model's temporal module and projection (``encode_video_from_features``); with
``clip_frames=1`` that is a frame-level embedding. Neighbouring clips share frames, so context
costs temporal-module time only, never extra backbone passes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np
import torch

from medvid.io.video import Video
from medvid.transforms.clip import ClipPreprocess, to_clip_tensor
from medvid.transforms.contract import PretrainedCfg

T = TypeVar("T")


@dataclass
class VideoEmbedding:
    """``times`` (s) and native ``frames`` indices of the evaluated samples, their ``emb [N, D]``."""

    times: np.ndarray
    frames: np.ndarray
    emb: torch.Tensor


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """Iterate ``items`` with the next one produced in a background thread (decode ∥ compute)."""
    it = iter(items)
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(next, it, None)
        while True:
            item = fut.result()
            if item is None:
                return
            fut = pool.submit(next, it, None)
            yield item


def clip_windows(n: int, step: int, clip_frames: int) -> np.ndarray:
    """Indices ``[ceil(n/step), clip_frames]`` into a stream of ``n`` features: for every ``step``-th
    sample, the ``clip_frames`` samples centred on it (clamped at the ends)."""
    centres = np.arange(0, n, step)
    offsets = np.arange(clip_frames) - clip_frames // 2
    return np.clip(centres[:, None] + offsets[None, :], 0, n - 1)


@torch.inference_mode()
def frame_features(model: Any, video: Video, fps: float, preprocess: ClipPreprocess,
                   batch_size: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    """Backbone features ``[N, F]`` of the frames every ``1/fps`` s, with their times."""
    times, feats = [], []
    device = next(model.parameters()).device
    for t, frames in prefetch(video.iter_batches(fps=fps, batch_size=batch_size)):
        x = preprocess(to_clip_tensor(frames)).permute(1, 0, 2, 3)  # (3, B, H, W) -> (B, 3, H, W)
        feats.append(model.encode_frames(x.contiguous().to(device)).float())
        times.append(t)
    if not feats:
        return np.zeros(0), torch.zeros(0, 0)
    return np.concatenate(times), torch.cat(feats)


def sampling_from_contract(pretrained_cfg: PretrainedCfg, fps: float, clip_frames: int | None = None,
                           clip_fps: float | None = None) -> dict[str, Any]:
    """``clip_frames`` and ``clip_fps`` for scoring at ``fps``: the given values, else the clip the model
    was trained on as its ``pretrained_cfg`` records it (``num_frames`` at ``fps`` — written by
    ``medvid pretrain``), else single frames (a contract without a frame rate, e.g. an imported
    SurgVLP-family model, whose reference protocol scores frames). A recorded rate that is not an
    integer multiple of ``fps`` is rounded to the nearest one (at least ``fps``)."""
    c = pretrained_cfg
    source = "settings"
    if clip_frames is None:
        recorded = c.fps
        if recorded and c.num_frames:
            clip_frames, source = int(c.num_frames), "model pretrained_cfg"
            if clip_fps is None:
                clip_fps = fps * max(1, round(float(recorded) / fps))
        else:
            clip_frames, source = 1, "frame-level (no clip rate recorded in the model)"
    clip_fps = fps if clip_fps is None else float(clip_fps)
    return {"clip_frames": int(clip_frames), "clip_fps": clip_fps, "source": source}


@torch.inference_mode()
def embed_video(model: Any, video: Video, fps: float = 1.0, clip_frames: int = 1, clip_fps: float | None = None,
                preprocess: ClipPreprocess | None = None, batch_size: int = 32,
                clip_batch: int = 256) -> VideoEmbedding:
    """Normalised embeddings ``[N, D]`` at every ``1/fps`` s (see the module docstring).

    ``clip_fps`` (default ``fps``) is the frame rate inside a clip and must be an integer
    multiple of ``fps``; ``preprocess`` defaults to the model's own (``model.preprocess()``).
    """
    clip_fps = fps if clip_fps is None else clip_fps
    step = clip_fps / fps
    if clip_frames < 1 or step < 1 or abs(step - round(step)) > 1e-6:
        raise ValueError(f"need clip_frames >= 1 and clip_fps an integer multiple of fps, got "
                         f"clip_frames={clip_frames}, fps={fps}, clip_fps={clip_fps}")
    preprocess = preprocess or model.preprocess()
    times, feats = frame_features(model, video, clip_fps, preprocess, batch_size)
    if len(times) == 0:
        return VideoEmbedding(times, np.zeros(0, np.int64), torch.zeros(0, 0))
    win = torch.from_numpy(clip_windows(len(times), int(round(step)), clip_frames))
    emb = torch.cat([model.encode_video_from_features(feats[w]).float() for w in win.split(clip_batch)])
    out_times = times[win[:, clip_frames // 2].numpy()]
    return VideoEmbedding(out_times, video.indices_at(out_times), emb)
