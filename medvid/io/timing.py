"""Time-based frame sampling: the one sampler every reader and loader uses (it sits in ``io`` because the
readers map times to frames with it).

Clips are chosen in seconds, not frame indices, so a 30 fps and a 60 fps loop (or a 25 and a
29.97 fps video) give comparable clips. Samplers return times; ``times_to_indices`` maps them
to frames given the frame timestamps, which may be irregular (DICOM ``FrameTimeVector``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Tolerance, as a fraction of a frame interval, for float error when a time lands on a frame boundary.
_EPS_FRACTION = 1e-4


def frame_timestamps(
    n_frames: int, fps: float | None = None, frame_durations_s: Sequence[float] | None = None
) -> np.ndarray:
    """Start time (s) of each frame, from a constant ``fps`` or per-frame durations."""
    if frame_durations_s is not None:
        d = np.asarray(frame_durations_s, dtype=np.float64)[:n_frames]
        if len(d) != n_frames:
            raise ValueError(f"{len(d)} frame durations for {n_frames} frames")
        return np.concatenate([[0.0], np.cumsum(d)[:-1]])
    if fps is None or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return np.arange(n_frames, dtype=np.float64) / float(fps)


def times_to_indices(times: Sequence[float] | np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time (the last frame starting at or before it).

    Times before the first frame map to frame 0; times past the end map to the last frame.
    """
    t = np.asarray(times, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) == 0:
        raise ValueError("no frames")
    step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
    idx = np.searchsorted(ts, t + _EPS_FRACTION * step, side="right") - 1
    return np.clip(idx, 0, len(ts) - 1).astype(np.int64)


def clip_times(num_frames: int, fps: float, start_s: float = 0.0) -> np.ndarray:
    """Times of ``num_frames`` frames at ``fps`` starting at ``start_s``."""
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"need num_frames > 0 and fps > 0, got {num_frames}, {fps}")
    return start_s + np.arange(num_frames, dtype=np.float64) / float(fps)


def span_times(start_s: float, end_s: float, num_frames: int) -> np.ndarray:
    """``num_frames`` times spread evenly over ``[start_s, end_s)`` (centres of equal bins)."""
    if end_s <= start_s or num_frames <= 0:
        raise ValueError(f"empty span [{start_s}, {end_s}) or num_frames={num_frames}")
    width = (end_s - start_s) / num_frames
    return start_s + width * (np.arange(num_frames) + 0.5)


def regular_times(duration_s: float, fps: float, start_s: float = 0.0) -> np.ndarray:
    """Every ``1/fps`` seconds from ``start_s`` while strictly before ``duration_s`` (e.g. 1 fps evaluation)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = int(np.ceil((duration_s - start_s) * fps - 1e-9))
    return start_s + np.arange(max(n, 0), dtype=np.float64) / fps


def cycle_span(duration_s: float, r_wave_times: Sequence[float] | np.ndarray | None = None,
               heart_rate: float | None = None, cycles: int = 1) -> tuple[float, float, str]:
    """``(t0, t1, source)``: the first ``cycles`` whole cardiac cycles of a loop lasting ``duration_s``.

    From R wave to R wave when the loop holds ``cycles + 1`` R waves (``source="r_wave"``); else
    ``cycles`` beat periods of ``heart_rate`` (bpm) from the first R wave, or from the start, capped at
    the loop (``"heart_rate"``); else the whole loop (``"loop"``).
    """
    if cycles < 1 or duration_s <= 0:
        raise ValueError(f"need cycles >= 1 and a positive duration, got {cycles}, {duration_s}")
    r = np.sort(np.asarray([] if r_wave_times is None else r_wave_times, dtype=np.float64))
    r = r[(r >= 0) & (r <= duration_s)]
    if len(r) > cycles:
        return float(r[0]), float(r[cycles]), "r_wave"
    if heart_rate and heart_rate > 0:
        period = cycles * 60.0 / float(heart_rate)
        t0 = float(r[0]) if len(r) and r[0] + period <= duration_s else 0.0
        return t0, min(t0 + period, duration_s), "heart_rate"
    return 0.0, float(duration_s), "loop"
