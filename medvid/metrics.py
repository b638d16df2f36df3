"""Evaluation metrics as the fields report them: retrieval recall@k, surgical phase metrics
(strict per-video accuracy / macro-F1 and the relaxed M2CAI-2016 / Cholec80 protocol),
tool AP / mAP, echo AUROC and EF MAE.

Conventions: labels are integer class indices; every score is a fraction in [0, 1] (the
public MATLAB scripts print percentages); NaN marks "undefined here" (a phase absent from a
video, a finding with only one class) and is skipped by the averages (``nanmean``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, f1_score

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _nanmean(x: ArrayLike) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else float("nan")


# --------------------------------------------------------------------------- retrieval


def recall_at_k(sim: ArrayLike, positives: ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k for retrieval: the fraction of queries with a positive among their top-k candidates.

    ``sim`` is ``[Nq, Nc]`` (higher = more similar). ``positives`` is either ``[Nq]`` integer
    indices (one positive per query) or a boolean ``[Nq, Nc]`` matrix (several positives).
    A query's rank is 1 + the number of candidates scoring strictly higher than its best
    positive (ties count in the query's favour). Returns ``{"recall@k": ..., "median_rank": ...}``;
    queries without any positive are left out.
    """
    s = torch.as_tensor(_np(sim), dtype=torch.float32)
    if s.ndim != 2:
        raise ValueError(f"sim must be [Nq, Nc], got shape {tuple(s.shape)}")
    pos = torch.as_tensor(_np(positives))
    if pos.ndim == 1:
        if len(pos) != s.shape[0]:
            raise ValueError(f"{len(pos)} positive indices for {s.shape[0]} queries")
        mask = torch.zeros_like(s, dtype=torch.bool)
        mask[torch.arange(s.shape[0]), pos.long()] = True
    elif pos.shape == s.shape:
        mask = pos.bool()
    else:
        raise ValueError(f"positives must be [Nq] indices or a [Nq, Nc] mask, got {tuple(pos.shape)}")
    has = mask.any(dim=1)
    s, mask = s[has], mask[has]
    if len(s) == 0:
        return {**{f"recall@{k}": float("nan") for k in ks}, "median_rank": float("nan")}
    best_pos = s.masked_fill(~mask, float("-inf")).max(dim=1, keepdim=True).values
    ranks = (s > best_pos).sum(dim=1) + 1
    out = {f"recall@{k}": float((ranks <= k).float().mean()) for k in ks}
    out["median_rank"] = float(ranks.float().median())
    return out


def chance_recall(n_candidates: int, k: int) -> float:
    """Recall@k of random ranking with one positive among ``n_candidates`` (the baseline beside ``recall_at_k``)."""
    return min(1.0, k / n_candidates)


# --------------------------------------------------------------------------- phases: strict


def phase_video_scores(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """Strict (unrelaxed) accuracy and macro-F1 of one video sampled at the evaluation rate.

    Macro-F1 follows ``sklearn.metrics.f1_score(average="macro")`` with its default labels:
    the phases present in ground truth **or** prediction of this video. A phase absent from
    both is ignored; one predicted but absent from the ground truth counts with F1 = 0; one in
    the ground truth but never predicted counts with F1 = 0.
    """
    g, p = _np(gt).astype(np.int64), _np(pred).astype(np.int64)
    if g.shape != p.shape or g.ndim != 1 or len(g) == 0:
        raise ValueError(f"gt and pred must be equal-length 1-D sequences, got {g.shape} and {p.shape}")
    return {
        "accuracy": float(np.mean(g == p)),
        "macro_f1": float(f1_score(g, p, average="macro", zero_division=0)),
    }


def strict_phase_metrics(videos: Sequence[tuple[ArrayLike, ArrayLike]]) -> dict[str, Any]:
    """SurgVLP-family protocol: accuracy and macro-F1 per video, then the mean (and std) over videos."""
    per = [phase_video_scores(g, p) for g, p in videos]
    acc = np.array([v["accuracy"] for v in per])
    f1 = np.array([v["macro_f1"] for v in per])
    return {
        "accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
        "macro_f1": float(f1.mean()), "macro_f1_std": float(f1.std()),
        "per_video": per,
    }


# --------------------------------------------------------------------------- phases: relaxed


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end_exclusive)`` of each run of True in a 1-D boolean array."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _cholec80_tolerated(phase: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Differences ``pred - gt`` forgiven at the start (late transition) and end (early transition)
    of a ground-truth segment of ``phase`` (0-based Cholec80 order), as in the public script:
    GallbladderDissection/Packaging may be followed by either of the two last phases, and the
    two last phases (CleaningCoagulation, GallbladderRetraction) may swap order."""
    if phase in (3, 4):
        return (-1,), (1, 2)
    if phase in (5, 6):
        return (-1, -2), (1, 2)
    return (-1,), (1,)


def relaxed_phase_scores(
    gt: ArrayLike, pred: ArrayLike, n_phases: int = 7, fps: float = 1.0, tolerance_s: float = 10.0,
    cholec80_exceptions: bool = True,
) -> dict[str, Any]:
    """Relaxed M2CAI-2016 metrics of one video (the Cholec80 variant when ``cholec80_exceptions``).

    Inside every ground-truth segment, a wrong prediction within ``tolerance_s`` of the segment's
    start is forgiven when it is the previous phase (``pred - gt == -1``: a late transition) and
    within ``tolerance_s`` of its end when it is the next phase (``+1``: an early transition);
    the Cholec80 exceptions widen this (see ``_cholec80_tolerated``). With the forgiven frames
    counted as correct (TP):

    * accuracy = correct frames / frames;
    * per phase *c* present in the ground truth: TP = correct frames in (gt == c) ∪ (pred == c),
      Jaccard = TP / |union|, precision = TP / |pred == c|, recall = TP / |gt == c|, each
      clipped to 1 as the public script does; NaN for phases absent from the ground truth.
      A phase never predicted has precision 1 if some of its frames were forgiven, else NaN
      (the script's ``tp/0`` clipped, or ``0/0``).

    The window is the first/last ``round(tolerance_s * fps)`` samples of the segment (the whole
    segment when shorter). The public MATLAB script indexes its end-of-segment window with a
    mask of the window's length, which in effect tests the window but resets samples at the
    segment's start; here the window's own samples are reset, as the comment there intends.
    """
    g, p = _np(gt).astype(np.int64), _np(pred).astype(np.int64)
    if g.shape != p.shape or g.ndim != 1 or len(g) == 0:
        raise ValueError(f"gt and pred must be equal-length 1-D sequences, got {g.shape} and {p.shape}")
    diff = p - g
    correct = diff == 0
    t_win = max(int(round(tolerance_s * fps)), 0)
    for c in range(n_phases):
        late, early = _cholec80_tolerated(c) if cholec80_exceptions else ((-1,), (1,))
        for start, end in _runs(g == c):
            t = min(t_win, end - start)
            if t == 0:
                continue
            head = slice(start, start + t)
            tail = slice(end - t, end)
            correct[head] |= np.isin(diff[head], late)
            correct[tail] |= np.isin(diff[tail], early)
    jac, prec, rec = (np.full(n_phases, np.nan) for _ in range(3))
    for c in range(n_phases):
        in_gt, in_pred = g == c, p == c
        if not in_gt.any():
            continue
        union = in_gt | in_pred
        tp = float(np.sum(correct & union))
        with np.errstate(divide="ignore", invalid="ignore"):
            jac[c], prec[c], rec[c] = np.minimum(np.float64(tp) / [union.sum(), in_pred.sum(), in_gt.sum()], 1.0)
    return {"accuracy": float(correct.mean()), "jaccard": jac, "precision": prec, "recall": rec}


def relaxed_phase_metrics(
    videos: Sequence[tuple[ArrayLike, ArrayLike]], n_phases: int = 7, fps: float = 1.0,
    tolerance_s: float = 10.0, cholec80_exceptions: bool = True,
) -> dict[str, Any]:
    """Relaxed metrics over videos as the public evaluation reports them: accuracy averaged over
    videos; Jaccard / precision / recall averaged per phase over the videos containing it
    (``nanmean``), then over phases."""
    per = [relaxed_phase_scores(g, p, n_phases, fps, tolerance_s, cholec80_exceptions) for g, p in videos]
    acc = np.array([v["accuracy"] for v in per])
    out: dict[str, Any] = {"accuracy": float(acc.mean()), "accuracy_std": float(acc.std())}
    for key in ("jaccard", "precision", "recall"):
        m = np.stack([v[key] for v in per])  # [videos, phases]
        with np.errstate(all="ignore"):
            per_phase = np.array([_nanmean(m[:, c]) for c in range(n_phases)])
        out[key] = _nanmean(per_phase)
        out[f"{key}_std"] = float(np.nanstd(per_phase)) if not np.all(np.isnan(per_phase)) else float("nan")
        out[f"{key}_per_phase"] = per_phase.tolist()
    out["per_video_accuracy"] = acc.tolist()
    return out


# --------------------------------------------------------------------------- tools


def tool_average_precision(targets: ArrayLike, scores: ArrayLike) -> dict[str, Any]:
    """Per-tool average precision (``sklearn.metrics.average_precision_score``) over all frames
    of all videos, and their mean (mAP). ``targets`` is 0/1 ``[N, tools]``; a tool never present
    gets AP = NaN and is left out of the mean."""
    y, s = _np(targets).astype(np.int64), _np(scores).astype(np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"targets and scores must be equal [N, tools] arrays, got {y.shape} and {s.shape}")
    ap = np.array([average_precision_score(y[:, j], s[:, j]) if y[:, j].any() else np.nan for j in range(y.shape[1])])
    return {"ap": ap.tolist(), "map": _nanmean(ap)}


# --------------------------------------------------------------------------- echo


def auroc(targets: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of one binary finding; NaN when only one class is present.
    Unknown labels (NaN) are dropped. Computed from ranks (Mann-Whitney U, ties counted half), equal
    to scikit-learn's ``roc_auc_score`` without its per-call validation (bootstraps call it 1,000s of times)."""
    y, s = _np(targets).astype(np.float64), _np(scores).astype(np.float64)
    keep = ~np.isnan(y)
    pos, s = y[keep] > 0.5, s[keep]
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(s)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_absolute_error(targets: ArrayLike, preds: ArrayLike) -> float:
    """MAE (e.g. EF in percentage points); unknown targets (NaN) are dropped."""
    y, p = _np(targets).astype(np.float64), _np(preds).astype(np.float64)
    keep = ~np.isnan(y)
    return float(np.mean(np.abs(y[keep] - p[keep]))) if keep.any() else float("nan")
