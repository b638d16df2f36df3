"""Phenotypes by similarity-weighted kNN over bank labels, and threshold calibration (Youden's J).

Weights: ``w = exp((sim - max sim) / temperature)`` over the ``k`` nearest neighbours that have a
label (``temperature: null`` gives plain ``max(sim, 0)`` weights). Numeric phenotypes are the
weighted mean; binary ones the weighted positive fraction, a score in [0, 1], called positive
when it reaches the phenotype's threshold.

Every value is an estimate, not a measurement: a numeric kNN estimate carries its neighbours' spread
(``spread``: weighted SD and interquartile range of their values), and every entry a ``display`` string at
clinical precision (:func:`display`: EF as an integer %, a binary phenotype as its call with score and
threshold), which is what text meant for a reader shows.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5
# Clinical precision per numeric phenotype: (decimals, unit); others one decimal, no unit.
CLINICAL_PRECISION: dict[str, tuple[int, str]] = {"ef": (0, "%"), "ejection_fraction": (0, "%")}


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
            out[name] = {"kind": "numeric", "value": value, "method": "knn", "k": k, "n": int(known.sum()),
                         "spread": neighbour_spread(y[known], w)}
    return out


def neighbour_spread(values: np.ndarray, weights: np.ndarray) -> dict[str, Any] | None:
    """How far the neighbours behind a kNN estimate disagree: ``{"sd": weighted SD, "iqr": [q1, q3]}`` of their
    values (None without a neighbour)."""
    if not len(values):
        return None
    mean = float(np.dot(weights, values) / weights.sum())
    sd = float(np.sqrt(np.dot(weights, (values - mean) ** 2) / weights.sum()))
    return {"sd": sd, "iqr": [float(v) for v in np.percentile(values, [25, 75])]}


def clinical_value(name: str, value: float) -> str:
    """A numeric phenotype at clinical precision with its unit: ``61.835`` EF -> ``"62 %"``."""
    decimals, unit = CLINICAL_PRECISION.get(name, (1, ""))
    return f"{value:.{decimals}f}" + (f" {unit}" if unit else "")


def display(name: str, block: Mapping[str, Any]) -> str:
    """How a reader sees a phenotype entry: a numeric estimate at clinical precision, labelled an estimate with its
    neighbours' IQR (``"62 % (estimate; neighbours 55-68 %)"``), a binary one as its call with score and
    threshold (``"positive (score 0.15, threshold 0.10)"``); ``"n/a"`` without a value."""
    if block["kind"] == "numeric":
        if block.get("value") is None:
            return "n/a"
        spread = block.get("spread")
        how = (f"neighbours {clinical_value(name, spread['iqr'][0]).split(' ')[0]}-{clinical_value(name, spread['iqr'][1])}"
               if spread else f"{block.get('method', 'knn')} model")
        return f"{clinical_value(name, block['value'])} (estimate; {how})"
    if block.get("call") is None:
        return "n/a"
    return (f"{'positive' if block['call'] else 'negative'} (score {block['score']:.2f}, "
            f"threshold {block['threshold']:.2f})")


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


# --------------------------------------------------------------------------- per-phenotype models chosen on validation
#
# ``medvid bank calibrate`` compares, per phenotype and on the validation split, the kNN vote (k from
# ``KNN_KS``, the drafting temperature) with a linear head fitted on the bank's own rows (the section's
# study embeddings of the bank's training studies and their labels: ridge regression for numeric
# phenotypes, L2 logistic regression for binary ones, features standardised, strength from
# ``RIDGE_ALPHAS`` / ``LOGISTIC_CS``). The best on validation (MAE; AUROC) is stored in the bank
# (manifest ``phenotype_models``, weights in ``heads-*.npz``) and used by every draft. Only bank rows
# are fitted, so labels of the studies being drafted never enter.

KNN_KS = (5, 10, 20, 50)
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0)
LOGISTIC_CS = (0.001, 0.01, 0.1, 1.0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as retrieval compares them (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def section_training_set(embeddings: np.ndarray, row_study: np.ndarray, labels: np.ndarray, column: int,
                         rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(X [n, D], y [n])``: a bank section's unit embeddings and the labels of their studies (known only)."""
    start, stop = rows
    y = np.asarray(labels, dtype=np.float64)[np.asarray(row_study[start:stop]), column]
    known = ~np.isnan(y)
    return unit_rows(np.asarray(embeddings[start:stop])[known]), y[known]


def fit_linear(x: np.ndarray, y: np.ndarray, kind: str, strength: float) -> tuple[np.ndarray, float]:
    """A linear head ``(w [D], b)`` on standardised features: ridge (``alpha = strength``) for numeric
    labels, L2 logistic regression (``C = strength``) for binary ones; deterministic."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    if kind == "binary":
        if len(np.unique(y)) < 2:
            raise ValueError("a logistic head needs positive and negative examples")
        model = LogisticRegression(C=strength, max_iter=2000).fit(z, y.astype(int))
        coef, intercept = model.coef_[0], float(model.intercept_[0])
    else:
        model = Ridge(alpha=strength).fit(z, y)
        coef, intercept = model.coef_, float(model.intercept_)
    w = coef / scaler.scale_
    return w, intercept - float(np.dot(w, scaler.mean_))


def predict_linear(w: np.ndarray, b: float, x: np.ndarray, kind: str) -> np.ndarray:
    """Head output for unit-scaled queries ``x [..., D]``: a value, or a probability for binary heads."""
    z = unit_rows(x) @ np.asarray(w, dtype=np.float64) + b
    return 1.0 / (1.0 + np.exp(-z)) if kind == "binary" else z


def linear_block(value: float, kind: str, threshold: float, n: int) -> dict[str, Any]:
    """The drafts.jsonl phenotype entry of a linear head (``n`` = bank rows it was fitted on)."""
    if kind == "binary":
        return {"kind": "binary", "score": float(value), "threshold": threshold, "call": int(value >= threshold),
                "method": "linear", "n": n}
    return {"kind": "numeric", "value": float(value), "method": "linear", "n": n, "spread": None}


def _score(kind: str, y: np.ndarray, pred: np.ndarray) -> float | None:
    """Validation score, higher is better: -MAE (numeric) or AUROC (binary; None with one class)."""
    from medvid.metrics import auroc

    keep = ~(np.isnan(y) | np.isnan(pred))
    y, pred = y[keep], pred[keep]
    if not len(y):
        return None
    if kind == "binary":
        return float(auroc(y, pred)) if len(np.unique(y)) == 2 else None
    return -float(np.mean(np.abs(y - pred)))


def select_models(kind: str, y_val: np.ndarray, knn_val: Mapping[int, np.ndarray], train: tuple[np.ndarray, np.ndarray],
                  x_val: np.ndarray) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """Choose one phenotype's model on validation. ``knn_val``: kNN predictions per k; ``train``: the bank
    rows ``(X, y)``; ``x_val``: the validation queries of the phenotype's section. Returns ``(model spec,
    head {"w", "b"} or None, validation scores per candidate)``. Ties keep the kNN vote."""
    candidates: list[tuple[float, int, dict[str, Any], dict[str, Any] | None]] = []
    scores: dict[str, Any] = {}
    for k, pred in knn_val.items():
        s = _score(kind, y_val, pred)
        scores[f"knn_k{k}"] = None if s is None else round(s, 4)
        if s is not None:
            candidates.append((s, 1, {"method": "knn", "k": int(k)}, None))
    x, y = train
    for strength in (LOGISTIC_CS if kind == "binary" else RIDGE_ALPHAS):
        if len(y) < 4 or (kind == "binary" and len(np.unique(y)) < 2):
            break
        w, b = fit_linear(x, y, kind, strength)
        s = _score(kind, y_val, predict_linear(w, b, x_val, kind))
        scores[f"linear_{strength:g}"] = None if s is None else round(s, 4)
        if s is not None:
            candidates.append((s, 0, {"method": "linear", "strength": strength, "n": int(len(y))}, {"w": w, "b": b}))
    if not candidates:
        return {"method": "knn"}, None, scores
    best = max(candidates, key=lambda c: (round(c[0], 6), c[1]))  # ties: kNN (flag 1) before linear
    return best[2], best[3], scores


def draft_phenotypes(bank, hits: Mapping[str, tuple[Any, Any]], b: int, queries: Mapping[str, np.ndarray],
                     pheno_section: Mapping[str, str], knn_k: int,
                     temperature: float | None) -> dict[str, dict[str, Any]]:
    """Phenotype block of study ``b`` of a retrieval batch: per phenotype the model ``bank calibrate``
    chose (a linear head on the query of its section, or the kNN vote with its k), else the kNN vote
    with the drafting ``knn_k``. ``hits``: :func:`medvid.report.retrieval.search` output; ``queries``:
    this study's embedding per section."""
    models, heads, names = bank.phenotype_models, bank.heads, list(bank.phenotypes)
    out: dict[str, dict[str, Any]] = {}
    for p, s in pheno_section.items():
        spec, kind = models.get(p, {}), bank.phenotypes[p]
        if spec.get("method") == "linear":
            w, bias = heads[p]
            value = float(predict_linear(w, bias, np.asarray(queries[s], dtype=np.float64), kind))
            out[p] = linear_block(value, kind, float(bank.thresholds.get(p, DEFAULT_THRESHOLD)), int(spec.get("n", 0)))
            continue
        sims, rows = hits[s].of(b)
        labels = np.asarray(bank.labels[np.asarray(bank.row_study[rows])])[:, [names.index(p)]]
        out.update(knn_phenotypes(sims, labels, [p], bank.phenotypes, bank.thresholds, int(spec.get("k", knn_k)),
                                  temperature))
    return {p: {**out[p], "display": display(p, out[p])} for p in names}
