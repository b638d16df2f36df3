"""Label-free, transductive adaptation of zero-shot phase scores: self-training on the run's own videos.

Prompt scores place the class boundaries where the text tower puts the prompts, which can be far from
where the video embeddings separate the phases (a linear probe on the same embeddings is much better
than the prompts). Self-training moves the boundaries to the data without any label: take the
``fraction`` most confident samples of each predicted class as pseudo-labels, fit an L2 logistic
regression (standardised embeddings, strength ``c``) on them, and blend its probabilities with the
prompt probabilities (``mix`` = the classifier's share). One round over all videos of a run: a larger
pool of frames fits better than one video alone (chosen on style A, ``docs/zero_shot.md``).

Nothing changes when the pseudo-labels hold fewer than two classes (a run that is one phase
throughout keeps its prompt predictions), and the result is deterministic for a given set of videos.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METHODS = ("none", "self_train")


def pseudo_labels(probs: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, labels)`` of the ``fraction`` most confident samples of each predicted class (at least one
    per class predicted anywhere), in sample order."""
    pred, conf = probs.argmax(1), probs.max(1)
    chosen = []
    for c in np.unique(pred):
        idx = np.flatnonzero(pred == c)
        take = max(1, int(np.ceil(fraction * len(idx))))
        chosen.append(idx[np.argsort(-conf[idx], kind="stable")[:take]])
    keep = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)
    return keep, pred[keep]


def self_train(embeddings: Sequence[np.ndarray], probs: Sequence[np.ndarray], fraction: float = 0.2,
               c: float = 0.1, mix: float = 0.5) -> list[np.ndarray]:
    """Adapted probabilities per video (same shapes as ``probs``: ``[T_v, C]``) from the run's embeddings
    ``[T_v, D]`` and prompt probabilities. See the module docstring."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if not 0.0 < fraction <= 1.0 or c <= 0.0 or not 0.0 <= mix <= 1.0:
        raise ValueError(f"self-training needs 0 < fraction <= 1, c > 0, 0 <= mix <= 1; got {fraction}, {c}, {mix}")
    if not len(probs):
        return []
    p = np.concatenate([np.asarray(q, dtype=np.float64) for q in probs])
    x = np.concatenate([np.asarray(e, dtype=np.float32) for e in embeddings])  # a 40-video run: ~190 MB
    if len(x) != len(p):
        raise ValueError(f"{len(x)} embeddings for {len(p)} probability rows")
    idx, y = pseudo_labels(p, fraction)
    if mix == 0.0 or len(np.unique(y)) < 2:
        return [np.asarray(q, dtype=np.float64) for q in probs]
    z = StandardScaler().fit_transform(x)
    clf = LogisticRegression(C=c, max_iter=2000).fit(z[idx], y)
    fitted = np.zeros_like(p)
    fitted[:, clf.classes_] = clf.predict_proba(z)
    adapted = (1.0 - mix) * p + mix * fitted
    return np.split(adapted, np.cumsum([len(q) for q in probs])[:-1])
