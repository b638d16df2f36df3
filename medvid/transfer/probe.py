"""Linear probes on frozen features with the regularisation chosen on validation data (scikit-learn).

* ``fit_ridge``: standardised features → ``Ridge``; alpha chosen by validation MAE;
* ``fit_logistic``: standardised features → ``LogisticRegression`` (binary or multiclass); C chosen by
  validation AUROC (binary) or macro-F1 (multiclass);
* ``fit_multilabel``: one logistic regression per label (tools), one C shared, chosen by validation mAP.

Validation scores can be computed on groups (e.g. per-video averages of clip predictions) through
``score_fn``. ``split_validation`` holds out whole groups of the training set when there is no
validation split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from medvid.metrics import auroc, mean_absolute_error, tool_average_precision

log = logging.getLogger("medvid")

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
CS = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class Probe:
    """A fitted probe: ``predict(x)`` gives values (regression), class probabilities ``[N, C]`` over
    ``n_classes`` (classification, classes missing from the training subset get 0) or per-label
    probabilities ``[N, L]`` (multi-label)."""

    models: list[Pipeline | float]  # one per label for multi-label; a float is a constant (one-class label)
    kind: str  # regression | classification | multilabel
    param: float
    val_score: float
    n_classes: int = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "regression":
            return self.models[0].predict(x)
        if self.kind == "classification":
            m = self.models[0]
            out = np.zeros((len(x), self.n_classes))
            out[:, m.classes_] = m.predict_proba(x)
            return out
        return np.stack([np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1]
                         for m in self.models], axis=1)


def split_validation(groups: Sequence[Any], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` holding out a seeded ``fraction`` of the distinct groups (at least one)."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise ValueError("need at least two groups to hold out a validation set")
    rng = np.random.default_rng(seed)
    held = rng.permutation(uniq)[:max(1, int(round(fraction * len(uniq))))]
    val = np.isin(groups, held)
    return np.flatnonzero(~val), np.flatnonzero(val)


def _select(make: Callable[[float], Any], params: Sequence[float], score: Callable[[Any], float],
            higher_is_better: bool) -> tuple[Any, float, float]:
    """Best ``(model, param, score)``; when no score is defined (e.g. one class in the validation set),
    the middle of ``params`` with a NaN score."""
    best, fitted = None, []
    for p in params:
        model = make(p)
        s = score(model)
        fitted.append((model, p))
        if not np.isnan(s) and (best is None or (s > best[2] if higher_is_better else s < best[2])):
            best = (model, p, s)
    if best is None:
        log.warning("validation score undefined for every regularisation value; using %g", fitted[len(fitted) // 2][1])
        return (*fitted[len(fitted) // 2], float("nan"))
    return best


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, alphas: Sequence[float] = ALPHAS,
              score_fn: Callable[[np.ndarray], float] | None = None) -> Probe:
    """Ridge regression; alpha minimises ``score_fn(val predictions)`` (default: MAE against ``y_val``)."""
    score_fn = score_fn or (lambda p: mean_absolute_error(y_val, p))
    model, alpha, s = _select(lambda a: make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x, y), alphas,
                              lambda m: score_fn(m.predict(x_val)), higher_is_better=False)
    return Probe([model], "regression", alpha, s)


def fit_logistic(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
                 cs: Sequence[float] = CS, score_fn: Callable[[np.ndarray], float] | None = None,
                 max_iter: int = 2000) -> Probe:
    """Logistic regression over ``n_classes``; C maximises ``score_fn(val probabilities [N, C])`` (default:
    AUROC for two classes, macro-F1 otherwise). A training subset with one class gives a constant probe."""
    y = np.asarray(y, dtype=np.int64)
    if score_fn is None:
        score_fn = ((lambda p: auroc(y_val, p[:, 1])) if n_classes == 2 else
                    (lambda p: float(f1_score(y_val, p.argmax(1), average="macro", zero_division=0))))
    if len(np.unique(y)) < 2:  # one class seen: predict it
        const = np.zeros(n_classes)
        const[y[0]] = 1.0
        return Probe([_Constant(const)], "classification", float("nan"), float("nan"), n_classes)

    def make(c: float) -> Probe:
        m = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter)).fit(x, y)
        return Probe([m], "classification", c, float("nan"), n_classes)
    probe, c, s = _select(make, cs, lambda p: score_fn(p.predict(x_val)), higher_is_better=True)
    probe.val_score = s
    return probe


def fit_multilabel(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cs: Sequence[float] = CS,
                   max_iter: int = 2000) -> Probe:
    """One logistic regression per label column of 0/1 ``y [N, L]``; the shared C maximises validation mAP."""
    y = np.asarray(y, dtype=np.int64)

    def make(c: float) -> Probe:
        models: list[Pipeline | float] = []
        for j in range(y.shape[1]):
            if len(np.unique(y[:, j])) < 2:
                models.append(float(y[0, j]))
            else:
                models.append(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
                              .fit(x, y[:, j]))
        return Probe(models, "multilabel", c, float("nan"))
    probe, c, s = _select(make, cs, lambda p: tool_average_precision(y_val, p.predict(x_val))["map"], True)
    probe.val_score = s
    return probe


class _Constant:
    """A classifier that always returns the same probabilities (a training subset with one class)."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs
        self.classes_ = np.arange(len(probs))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile(self.probs, (len(x), 1))
