"""Few-shot training subsets: a fraction of the labelled units or ``k`` per class, stratified and seeded.

Units are whatever the caller labels (videos for echo, videos or seconds for surgery). Regression
targets are stratified by quantile bins (``strata``), so a 1 % subset still spans low and high EF.
Every function returns sorted indices into the unit list; the same seed gives the same subset.
"""
from __future__ import annotations

import numpy as np


def strata(y: np.ndarray, bins: int = 4) -> np.ndarray:
    """Stratum of each unit: the class for integer labels, the quantile bin (of ``bins``) for real values."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or (np.array_equal(y, np.round(y)) and len(np.unique(y)) <= bins):
        return np.unique(y, return_inverse=True)[1]
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def label_fraction(labels: np.ndarray, fraction: float, seed: int, bins: int = 4) -> np.ndarray:
    """A stratified random ``fraction`` of the units (at least one per stratum; all of them at 1.0)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s = strata(labels, bins)
    if fraction >= 1:
        return np.arange(len(s))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(s == c))[:max(1, int(round(fraction * np.sum(s == c))))]
              for c in np.unique(s)]
    return np.sort(np.concatenate(picked))


def k_shot(labels: np.ndarray, k: int, seed: int, bins: int = 4) -> np.ndarray:
    """``k`` random units per stratum (all of a stratum that has fewer)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = strata(labels, bins)
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(s == c))[:k] for c in np.unique(s)]))


def mean_sd(values: list[float]) -> dict[str, float]:
    """``{"mean", "sd", "n"}`` over seeds (sample standard deviation; 0 for a single seed)."""
    a = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not len(a):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}
