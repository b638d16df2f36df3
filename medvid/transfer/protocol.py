"""The transfer protocol shared by echo and surgery: label fractions and k-shot subsets over seeds, the
regularisation grid, and what a probe run returns (``ProbeResult``) for the job to write."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.transfer.fewshot import k_shot, label_fraction, mean_sd

log = logging.getLogger("medvid")


@dataclass
class Protocol:
    """The settings every probe task shares: label fractions, k-shot and seeds, the regularisation grid,
    zero-shot on / off and its prompt file, batch size and progress."""

    fractions: list[float] = setting(factory=lambda: [0.01, 0.1, 1.0],
                                     help="label fractions of the training set (learning curve)")
    kshots: list[int] = setting(factory=lambda: [1, 5, 10],
                                help="k per class (EF: per quartile; phases: seconds per phase); [] = none")
    seeds: list[int] = setting(factory=lambda: [0, 1, 2], help="subsets and heads per seed → mean ± sd")
    val_fraction: float = setting(0.2, "no validation split: this share of training videos is held out")
    cs: list[float] = setting(factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0],
                              help="logistic C, chosen on validation AUROC / macro-F1 / mAP")
    zero_shot: bool = setting(True, "score the same model zero-shot on the same test split")
    prompts: Optional[str] = setting(None, "null: the shipped prompt file of the task (echo findings, or the "
                                           "surgical phase / tool set)")
    batch_size: int = setting(4, "loops per backbone call (echo); x8 frames (surgery)")
    progress: bool = setting(True, "progress bars")


def check_protocol(p: Any) -> None:
    """Refuse unusable fractions, k-shots or seeds before any work."""
    if not p.fractions or any(not 0 < f <= 1 for f in p.fractions):
        raise MedvidError(f"fractions must be in (0, 1], got {list(p.fractions)}")
    if any(k < 1 for k in p.kshots) or not p.seeds:
        raise MedvidError("kshots must be >= 1 and seeds non-empty")


@dataclass
class ProbeResult:
    """A probe run: ``metrics`` (for ``metrics.json``; ``headline_metric`` and ``headline`` for the summary),
    prediction ``tables`` by relative path, and the learning curve (``curves`` per method over
    ``fractions``, reference ``lines``, ``ylabel``)."""

    metrics: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    curves: dict[str, list[float]]
    lines: dict[str, float] = field(default_factory=dict)
    ylabel: str = ""


def curves(p: Any, units_y: np.ndarray, fit_score: Callable[[np.ndarray, int], dict[str, float]],
           key: str, kshot: bool = True) -> tuple[dict, dict]:
    """Score ``fit_score(train unit indices, seed)`` for every fraction / k-shot and seed → mean ± sd."""
    fractions, shots = {}, {}
    for f in p.fractions:
        runs = [fit_score(label_fraction(units_y, f, s), s) for s in (p.seeds if f < 1 else p.seeds[:1])]
        fractions[f"{f:g}"] = {k: mean_sd([r[k] for r in runs]) for k in runs[0]}
        log.info("fraction %g: %s %.4f", f, key, fractions[f"{f:g}"][key]["mean"])
    for k in p.kshots if kshot else []:
        runs = [fit_score(k_shot(units_y, k, s), s) for s in p.seeds]
        shots[str(k)] = {m: mean_sd([r[m] for r in runs]) for m in runs[0]}
    return fractions, shots


def study_mean(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of per-clip ``values`` per study index (NaN for studies without clips)."""
    sums = np.zeros((n,) + values.shape[1:])
    np.add.at(sums, owner, values)
    counts = np.bincount(owner, minlength=n).reshape((n,) + (1,) * (values.ndim - 1))
    with np.errstate(invalid="ignore"):
        return sums / counts
