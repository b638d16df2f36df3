"""Phenotypes by similarity-weighted kNN over bank labels, and threshold calibration (Youden's J).

Weights: ``w = exp((sim - max sim) / temperature)`` over the ``k`` nearest neighbours that have a
label (``temperature: null`` gives plain ``max(sim, 0)`` weights). Numeric phenotypes are the
weighted mean; binary ones the weighted positive fraction, a score in [0, 1], called positive
when it reaches the phenotype's threshold.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5


def knn_weights(similarities: np.ndarray, temperature: float | None) -> np.ndarray:
    """Neighbour weights from cosine similarities (best first or any order)."""
    s = np.asarray(similarities, dtype=np.float64)
    if s.size == 0:
        return s
    if temperature is None:
        return np.clip(s, 0.0, None) + 1e-12
    return np.exp((s - s.max()) / float(temperature))


def knn_phenotypes(similarities: np.ndarray, labels: np.ndarray, names: Sequence[str], kinds: Mapping[str, str],
                   thresholds: Mapping[str, float], k: int, temperature: float | None = None) -> dict[str, dict[str, Any]]:
    """Phenotypes of one study from its neighbours: ``similarities [n]`` and their ``labels [n, P]``
    (NaN = unknown; columns named ``names``), using the ``k`` best. Returns the drafts.jsonl block."""
    order = np.argsort(-np.asarray(similarities))[:k]
    sims, labels = np.asarray(similarities)[order], np.asarray(labels, dtype=np.float64)[order]
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        y = labels[:, j] if labels.size else np.zeros(0)
        known = ~np.isnan(y)
        w = knn_weights(sims[known], temperature)
        value = float(np.dot(w, y[known]) / w.sum()) if known.any() else None
        kind = kinds.get(name, "numeric")
        if kind == "binary":
            thr = float(thresholds.get(name, DEFAULT_THRESHOLD))
            out[name] = {"kind": "binary", "score": value, "threshold": thr,
                         "call": None if value is None else int(value >= thr), "method": "knn", "k": k,
                         "n": int(known.sum())}
        else:
            out[name] = {"kind": "numeric", "value": value, "method": "knn", "k": k, "n": int(known.sum())}
    return out


def youden_threshold(targets: Sequence[float], scores: Sequence[float]) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (the ROC point furthest above
    chance); a score ``>=`` it is called positive. Needs both classes."""
    from sklearn.metrics import roc_curve

    y, s = np.asarray(targets, dtype=float), np.asarray(scores, dtype=float)
    keep = ~(np.isnan(y) | np.isnan(s))
    y, s = y[keep], s[keep]
    if len(np.unique(y)) < 2:
        raise ValueError("Youden's J needs positive and negative examples")
    fpr, tpr, thr = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    return float(min(thr[best], 1.0))  # roc_curve's first threshold is +inf (nothing positive)
