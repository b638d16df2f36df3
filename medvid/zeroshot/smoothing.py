"""Optional temporal smoothing of per-second phase probabilities (off in the reference protocol).

* ``moving_average``: a centred uniform window over each class's probability;
* ``median``: a centred median window over each class's probability (robust to one-off flips);
* ``hmm``: Viterbi decoding with a phase-order prior — stay with probability ``stay``, move
  forward to a later phase with most of the rest, backward rarely — treating the frame
  probabilities as emission likelihoods.

Smoothing returns probabilities ``[T, C]`` (for ``hmm``: one-hot of the decoded path), so the
caller takes the argmax either way.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

METHODS = ("none", "moving_average", "median", "hmm")


def phase_order_transitions(n: int, stay: float = 0.99, backward: float = 0.05) -> np.ndarray:
    """Row-stochastic ``[n, n]`` transition matrix: ``stay`` on the diagonal; of the rest, a share
    ``1 - backward`` spread over later phases (nearer ones likelier) and ``backward`` over earlier ones."""
    if not 0.0 < stay < 1.0 or not 0.0 <= backward <= 1.0:
        raise ValueError(f"need 0 < stay < 1 and 0 <= backward <= 1, got {stay}, {backward}")
    a = np.zeros((n, n))
    for i in range(n):
        fwd = np.array([1.0 / (j - i) for j in range(i + 1, n)])
        bwd = np.array([1.0 / (i - j) for j in range(i)])
        w_f, w_b = (1 - backward, backward) if len(fwd) and len(bwd) else (float(len(fwd) > 0), float(len(bwd) > 0))
        if len(fwd):
            a[i, i + 1:] = (1 - stay) * w_f * fwd / fwd.sum()
        if len(bwd):
            a[i, :i] = (1 - stay) * w_b * bwd / bwd.sum()
        a[i, i] = 1.0 - a[i].sum()
    return a


def viterbi(probs: np.ndarray, transitions: np.ndarray, initial: np.ndarray | None = None) -> np.ndarray:
    """Most likely state path ``[T]`` given emission probabilities ``[T, C]`` (log-space)."""
    t_len, n = probs.shape
    log_e = np.log(np.clip(probs, 1e-12, None))
    log_a = np.log(np.clip(transitions, 1e-300, None))
    init = np.full(n, 1.0 / n) if initial is None else np.asarray(initial, dtype=np.float64)
    score = np.log(np.clip(init, 1e-300, None)) + log_e[0]
    back = np.zeros((t_len, n), dtype=np.int64)
    for t in range(1, t_len):
        cand = score[:, None] + log_a  # [from, to]
        back[t] = cand.argmax(axis=0)
        score = cand.max(axis=0) + log_e[t]
    path = np.empty(t_len, dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def smooth(probs: np.ndarray, method: str = "none", window: int = 15, stay: float = 0.99,
           backward: float = 0.05) -> np.ndarray:
    """Smoothed ``[T, C]`` probabilities (see the module docstring); ``window`` in samples."""
    p = np.asarray(probs, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"smoothing must be one of {METHODS}, got {method!r}")
    if method == "none" or len(p) == 0:
        return p
    if method == "moving_average":
        return uniform_filter1d(p, size=window, axis=0, mode="nearest")
    if method == "median":
        return median_filter(p, size=(window, 1), mode="nearest")
    path = viterbi(p, phase_order_transitions(p.shape[1], stay, backward))
    return np.eye(p.shape[1])[path]
