"""Lecture frame type (slide / operative / other) from cheap colour statistics: a baseline, no training.

- slide: a large flat, bright, unsaturated background (most pixels share one light colour);
- operative: endoscopic footage is dominated by red-pink tissue (R well above G and B);
- other: anything else (the speaker, the audience, a blank screen).

Thresholds are arguments so they can be tuned on real lectures; a learned classifier
(``models.view``) can replace this once trained. Dark slide templates are a known miss.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvid.vocab import LECTURE_FRAME_TYPES


@dataclass(frozen=True)
class FrameStats:
    flat_light: float  # fraction of pixels in the most common light, unsaturated colour bin
    tissue: float  # fraction of pixels that look like tissue (red dominant, not dark)


def frame_stats(frame: np.ndarray) -> FrameStats:
    """Statistics of one uint8 RGB frame (H, W, 3); subsampled to ~64x64 for speed."""
    step = max(1, min(frame.shape[:2]) // 64)
    f = frame[::step, ::step].astype(np.int32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    mx, mn = f.max(-1), f.min(-1)
    light = (mn > 170) & (mx - mn < 40)
    if light.any():
        q = (f[light] // 16) @ np.array([256, 16, 1])
        flat_light = np.bincount(q).max() / r.size
    else:
        flat_light = 0.0
    tissue = (r > 70) & (r > 1.25 * g) & (r > 1.15 * b)
    return FrameStats(float(flat_light), float(tissue.mean()))


def classify_frame(frame: np.ndarray, slide_min_flat: float = 0.4, operative_min_tissue: float = 0.3) -> str:
    """One of ``LECTURE_FRAME_TYPES`` for a uint8 RGB frame."""
    s = frame_stats(frame)
    if s.flat_light >= slide_min_flat:
        return LECTURE_FRAME_TYPES[0]
    if s.tissue >= operative_min_tissue:
        return LECTURE_FRAME_TYPES[1]
    return LECTURE_FRAME_TYPES[2]


def classify_frames(frames: np.ndarray, **thresholds: float) -> list[str]:
    """Frame type of each frame in ``(T, H, W, 3)``."""
    return [classify_frame(f, **thresholds) for f in frames]
