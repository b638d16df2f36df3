"""Evaluate drafted reports (``OUT/drafts.jsonl``, docs/drafting_contract.md) against an ingest's
``labels.csv`` and ``reports.csv`` (scrubbed by ingest), each metric beside baselines computed the same way.

- Numeric phenotypes (EF …): MAE, RMSE, R² — baselines: the training mean, a random training study's value.
- Binary phenotypes: AUROC of the kNN score — baselines: the training prevalence as a constant score
  (AUROC 0.5), a random training study's label.
- Section text: token F1 of the drafted vs the true section (bag of lower-cased words and numbers),
  and finding-level agreement (``extract_finding`` of both must be equal), per section and macro over
  sections; a section the true report has and the draft lacks scores 0 — baseline: a random
  training report's text for that section (chosen among reports that have it; seeded).

Drafts of studies that are in the bank they were drafted from (``in_bank``; in drafts written before that field:
the study among its own neighbours) are not scored: their neighbours and labels are the evaluation's own answers
(drafted with the default ``split=""``, 60 of 120 drafts once had the study itself as nearest neighbour and
scored EF MAE 4.1, token F1 0.88). They are counted (``studies_in_bank``) and named in ``notes``; drafts that
are all in the bank are refused. Baselines draw on the ``baseline_split`` studies that are not scored, so the
bank's own training studies stay available to them; with no such study a baseline is undefined (``null``,
shown as "–") and ``notes`` says so.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score

from medvid.errors import MedvidError
from medvid.io.ingest_folder import IngestFolder
from medvid.io.reports import parse_sections, read_labels, read_reports
from medvid.metrics import auroc, mean_absolute_error
from medvid.utils import iter_jsonl

_TOKEN = re.compile(r"\[[a-z]+\]|[a-z]+|\d+(?:\.\d+)?")
_SEVERITY = (("severe", r"severe(?:ly)?|large|critical"), ("moderate", r"moderate(?:ly)?"),
             ("mild", r"mild(?:ly)?|small|minimal"), ("trivial", r"trivial|trace"))
_ABSENT = r"\bno\b|\bnot\b|\bwithout\b|\babsent\b|\bnone\b|\bintact\b"
_ABNORMAL = (r"effusion|regurgitation|stenosis|thrombus|defect|hypokines\w*|akines\w*|dyskines\w*|abnormalit\w*"
             r"|mass|vegetation|shunt|prolapse|calcifi\w*")


# --------------------------------------------------------------------------- text agreement
def tokens(text: str) -> list[str]:
    """Lower-cased words and numbers (placeholders such as ``[DATE]`` are one token)."""
    return _TOKEN.findall((text or "").lower())


def token_f1(pred: str, ref: str) -> float:
    """Bag-of-tokens F1 of ``pred`` against ``ref`` (1.0 when both are empty)."""
    p, r = Counter(tokens(pred)), Counter(tokens(ref))
    if not p and not r:
        return 1.0
    overlap = sum((p & r).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def clauses(text: str) -> list[str]:
    """A text's clauses, lower-cased: split at ``. ; ,`` and at "with" / "but" (each clause holds one statement)."""
    return [c.strip() for c in re.split(r"[.;,]|\bwith\b|\bbut\b", (text or "").lower()) if c.strip()]


def negated(clause: str) -> bool:
    """Whether a clause carries a negation cue (no, not, without, absent, none, intact): "No pericardial effusion",
    "normal without regurgitation". The rule extract_finding and the worklist search share (no NLP model)."""
    return bool(re.search(_ABSENT, clause.lower()))


def finding_fields(text: str) -> dict[str, str]:
    """What a section says, as fields: ``presence`` (absent/present of an abnormality), ``severity``
    (none/trivial/mild/moderate/severe), ``size`` (normal/dilated), ``function`` (normal/reduced); a field
    the text does not state is missing."""
    t = (text or "").lower()
    out: dict[str, str] = {}
    abnormal = [c for c in clauses(t) if re.search(_ABNORMAL, c)]
    if abnormal:  # present when one clause states an abnormality without negating it
        out["presence"] = "present" if any(not negated(c) for c in abnormal) else "absent"
    elif re.search(r"\bintact\b", t):
        out["presence"] = "absent"
    severity = next((name for name, pattern in _SEVERITY if re.search(rf"\b(?:{pattern})\b", t)), None)
    if severity is None and out.get("presence") == "absent":
        severity = "none"
    if severity:
        out["severity"] = severity
    if re.search(r"dilat\w*|enlarg\w*", t):
        out["size"] = "dilated"
    elif re.search(r"normal (?:in )?(?:cavity )?size|normal[\w ]*\bsize\b|of normal size", t):
        out["size"] = "normal"
    if re.search(r"reduced|depressed|hypokines\w*|dysfunction", t):
        out["function"] = "reduced"
    elif re.search(r"normal[\w ]*function|function is normal|systolic function is normal", t):
        out["function"] = "normal"
    return out


def extract_finding(text: str) -> str:
    """A normalised statement of what a section says (:func:`finding_fields` joined as ``key=value`` pairs;
    ``unspecified`` when none is stated)."""
    return ";".join(f"{k}={v}" for k, v in finding_fields(text).items()) or "unspecified"


def section_agreement(drafts: Mapping[str, Mapping[str, str]], truth: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Token F1 and finding agreement per section over the studies whose true report has the section,
    and their macro mean over sections. ``drafts``/``truth``: {study_key: {section: text}}."""
    per: dict[str, dict[str, list[float]]] = {}
    for key, true_sections in truth.items():
        drafted = drafts.get(key, {})
        for name, ref in true_sections.items():
            pred = drafted.get(name, "")
            scores = per.setdefault(name, {"f1": [], "finding": []})
            scores["f1"].append(token_f1(pred, ref) if pred else 0.0)
            scores["finding"].append(float(bool(pred) and extract_finding(pred) == extract_finding(ref)))
    sections = {name: {"token_f1": float(np.mean(s["f1"])), "finding_agreement": float(np.mean(s["finding"])),
                       "n": len(s["f1"])} for name, s in per.items()}
    return {"token_f1": _macro(sections, "token_f1"), "finding_agreement": _macro(sections, "finding_agreement"),
            "sections": sections}


def _macro(sections: Mapping[str, Mapping[str, float]], key: str) -> float:
    return float(np.mean([s[key] for s in sections.values()])) if sections else float("nan")


# --------------------------------------------------------------------------- phenotypes
def numeric_metrics(targets: Iterable[float], preds: Iterable[float]) -> dict[str, float]:
    """MAE, RMSE and R² over pairs with both a target and a prediction."""
    y, p = np.asarray(list(targets), dtype=float), np.asarray(list(preds), dtype=float)
    keep = ~(np.isnan(y) | np.isnan(p))
    y, p = y[keep], p[keep]
    if not len(y):
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "n": 0}
    r2 = float(r2_score(y, p)) if len(y) > 1 and np.ptp(y) > 0 else float("nan")
    return {"mae": mean_absolute_error(y, p), "rmse": float(np.sqrt(np.mean((y - p) ** 2))), "r2": r2, "n": int(len(y))}


def binary_metrics(targets: Iterable[float], scores: Iterable[float], boot: int = 0) -> dict[str, Any]:
    """AUROC (NaN with one class), prevalence, count and positives over pairs with a label and a score;
    with ``boot`` > 0 also a 95 % bootstrap interval of the AUROC (studies resampled, seeded)."""
    y, s = np.asarray(list(targets), dtype=float), np.asarray(list(scores), dtype=float)
    keep = ~(np.isnan(y) | np.isnan(s))
    y, s = y[keep], s[keep]
    out: dict[str, Any] = {"auroc": auroc(y, s) if len(y) else float("nan"),
                           "prevalence": float(y.mean()) if len(y) else float("nan"), "n": int(len(y)),
                           "positives": int(y.sum())}
    if boot and 0 < y.sum() < len(y):
        rng = np.random.default_rng(0)
        draws = [rng.integers(0, len(y), len(y)) for _ in range(boot)]
        values = [auroc(y[i], s[i]) for i in draws if 0 < y[i].sum() < len(i)]
        out["auroc_ci95"] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out


# --------------------------------------------------------------------------- reading
def read_drafts(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``drafts.jsonl`` (contract: ``study_key``, ``sections`` {name: {text}}, ``phenotypes``)."""
    path = Path(path)
    if not path.is_file():
        raise MedvidError(f"{path}: drafts file not found (run `medvid draft` first)")
    rows, seen = [], set()
    for number, row in iter_jsonl(path):
        if not isinstance(row, dict) or not row.get("study_key") or not isinstance(row.get("sections", {}), dict):
            raise MedvidError(f"{path}:{number}: a draft needs a study_key and a sections object")
        if row["study_key"] in seen:
            raise MedvidError(f"{path}:{number}: study {row['study_key']} drafted twice")
        seen.add(row["study_key"])
        rows.append(row)
    if not rows:
        raise MedvidError(f"{path}: no drafts")
    return rows


def draft_sections(row: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(s.get("text") or "") if isinstance(s, Mapping) else str(s or "")
            for name, s in row.get("sections", {}).items()}


def in_bank(row: Mapping[str, Any]) -> bool:
    """Whether a draft's study is in the bank it was drafted from: the draft's ``in_bank`` (``medvid draft``), or,
    in drafts written before that field, the study among its own neighbours."""
    if "in_bank" in row:
        return bool(row["in_bank"])
    sections = [s for s in row.get("sections", {}).values() if isinstance(s, Mapping)]
    return any(isinstance(n, Mapping) and n.get("study_key") == row["study_key"]
               for s in sections for n in s.get("neighbours") or [])


# --------------------------------------------------------------------------- evaluation
def evaluate_drafts(drafts_path: str | os.PathLike, ingest_dir: str | os.PathLike, *, baseline_split: str = "train",
                    seed: int = 0) -> dict[str, Any]:
    """Every metric for the drafts in ``drafts_path`` against the ingest's tables, beside its baselines.

    Drafts of studies in the bank are left out (counted; all of them: refused). Baselines draw on the
    ``baseline_split`` studies of ``reports.csv`` that are not scored (all such studies when that split is
    empty)."""
    drafted = read_drafts(drafts_path)
    rows = [r for r in drafted if not in_bank(r)]
    if not rows:
        raise MedvidError(f"{drafts_path}: all {len(drafted)} drafted studies are in the bank they were drafted from, "
                          "so their scores would measure the bank, not drafting; draft studies the bank was not built "
                          "from (e.g. `medvid draft ... split=test`) and evaluate those")
    ingest_dir = Path(ingest_dir)
    reports = _optional(IngestFolder(ingest_dir).reports, read_reports)
    labels = _optional(IngestFolder(ingest_dir).labels, read_labels)
    if reports is None and labels is None:
        raise MedvidError(f"{ingest_dir}: neither reports.csv nor labels.csv (the ingest's companion tables)")
    pool = _baseline_pool(reports, labels, {r["study_key"] for r in rows}, baseline_split)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"studies": len(rows), "studies_in_bank": len(drafted) - len(rows),
                              "baseline_split": baseline_split, "baseline_studies": len(pool), "seed": seed,
                              "notes": _notes(len(drafted) - len(rows), len(pool), baseline_split)}
    if labels is not None:
        result["phenotypes"] = _phenotypes(rows, labels.set_index("study_key"), pool, rng)
    if reports is not None:
        result["sections"] = _sections(rows, reports.set_index("study_key"), pool, rng)
    return result


def _notes(in_bank_studies: int, pool: int, split: str) -> list[str]:
    """What a reader of the numbers must know: drafts left out for being in the bank, undefined baselines."""
    notes = []
    if in_bank_studies:
        notes.append(f"{in_bank_studies} drafted studies are in the bank they were drafted from and are NOT scored "
                     "(their own labels and text would be the answers); draft a split the bank was not built from")
    if not pool:
        notes.append(f"no study outside the scored drafts in split {split!r} (nor in any other) to draw baselines "
                     "from: every baseline is undefined (–)")
    return notes


def _optional(path: Path, reader) -> pd.DataFrame | None:
    return reader(path, key="study_key") if path.is_file() else None


def _baseline_pool(reports: pd.DataFrame | None, labels: pd.DataFrame | None, scored: set[str], split: str) -> list[str]:
    known = set(reports["study_key"]) if reports is not None else set(labels["study_key"])
    if reports is not None and split:
        chosen = set(reports.loc[reports["split"] == split, "study_key"]) - scored
        if chosen:
            return sorted(chosen)
    return sorted(known - scored)


def _phenotypes(rows: list[dict], labels: pd.DataFrame, pool: list[str], rng: np.random.Generator) -> dict[str, Any]:
    train = labels.reindex([k for k in pool if k in labels.index])
    out: dict[str, Any] = {}
    names = sorted({n for r in rows for n in r.get("phenotypes", {})} & set(labels.columns))
    for name in names:
        kinds = {r["phenotypes"][name].get("kind") for r in rows if name in r.get("phenotypes", {})}
        kind = "binary" if "binary" in kinds else "numeric"
        field = "score" if kind == "binary" else "value"
        truth = [_num(labels[name].get(r["study_key"])) for r in rows]
        preds = [_num(r.get("phenotypes", {}).get(name, {}).get(field)) for r in rows]
        known = train[name].dropna().to_numpy() if name in train else np.array([])
        neighbour = rng.choice(known, size=len(rows)) if len(known) else np.full(len(rows), np.nan)
        constant = np.full(len(rows), known.mean() if len(known) else np.nan)
        if kind == "numeric":
            out[name] = {"kind": kind, "draft": numeric_metrics(truth, preds),
                         "baseline_train_mean": numeric_metrics(truth, constant),
                         "baseline_random_neighbour": numeric_metrics(truth, neighbour)}
            base = out[name]["baseline_train_mean"]["mae"]
            out[name]["mae_reduction_vs_train_mean"] = 1 - out[name]["draft"]["mae"] / base if base else float("nan")
            ci = _reduction_ci(np.asarray(truth), np.asarray(preds), constant)
            if ci:
                out[name]["mae_reduction_ci95"] = ci
        else:
            out[name] = {"kind": kind, "draft": binary_metrics(truth, preds, boot=1000),
                         "baseline_prevalence": binary_metrics(truth, constant),
                         "baseline_random_neighbour": binary_metrics(truth, neighbour)}
        out[name]["methods"] = sorted({str(r["phenotypes"][name].get("method", "knn")) for r in rows
                                       if name in r.get("phenotypes", {})})
    return out


def _reduction_ci(y: np.ndarray, pred: np.ndarray, base: np.ndarray, boot: int = 1000) -> list[float] | None:
    """95 % bootstrap interval (studies resampled, seeded) of 1 - MAE(pred) / MAE(base)."""
    keep = ~(np.isnan(y) | np.isnan(pred) | np.isnan(base))
    err, err_base = np.abs(y - pred)[keep], np.abs(y - base)[keep]
    if len(err) < 2:
        return None
    rng = np.random.default_rng(0)
    values = [1 - err[i].mean() / err_base[i].mean()
              for i in (rng.integers(0, len(err), len(err)) for _ in range(boot)) if err_base[i].mean() > 0]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def _sections(rows: list[dict], reports: pd.DataFrame, pool: list[str], rng: np.random.Generator) -> dict[str, Any]:
    truth = {r["study_key"]: parse_sections(str(reports.at[r["study_key"], "report"]))
             for r in rows if r["study_key"] in reports.index}
    drafts = {r["study_key"]: draft_sections(r) for r in rows}
    train = [parse_sections(str(reports.at[k, "report"])) for k in pool if k in reports.index]
    having: dict[str, list[str]] = {}
    for sections in train:
        for name, text in sections.items():
            having.setdefault(name, []).append(text)
    random_drafts = {key: {name: having[name][int(rng.integers(len(having[name])))]
                           for name in sections if having.get(name)} for key, sections in truth.items()}
    baseline = (section_agreement(random_drafts, truth) if having  # no report to draw from: undefined, not 0
                else {"token_f1": float("nan"), "finding_agreement": float("nan"), "sections": {}})
    return {"studies_with_report": len(truth), "draft": section_agreement(drafts, truth),
            "baseline_random_neighbour": baseline}


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a summary shows: per phenotype draft vs baseline, section agreement vs random neighbour (macro,
    and per section under ``section_text``)."""
    out: dict[str, Any] = {"studies": metrics["studies"], "studies_in_bank": metrics["studies_in_bank"],
                           "baseline_studies": metrics["baseline_studies"]}
    if metrics["notes"]:
        out["notes"] = list(metrics["notes"])
    for name, m in metrics.get("phenotypes", {}).items():
        if m["kind"] == "numeric":
            out[f"{name}_mae"] = _round(m["draft"]["mae"])
            out[f"{name}_mae_train_mean"] = _round(m["baseline_train_mean"]["mae"])
            if "mae_reduction_ci95" in m:
                out[f"{name}_mae_reduction_vs_train_mean"] = _round(m["mae_reduction_vs_train_mean"])
                out[f"{name}_mae_reduction_ci95"] = [_round(v) for v in m["mae_reduction_ci95"]]
        else:
            out[f"{name}_auroc"] = _round(m["draft"]["auroc"])
            out[f"{name}_positives"] = m["draft"]["positives"]
    if "sections" in metrics:
        s = metrics["sections"]
        out.update({"token_f1": _round(s["draft"]["token_f1"]),
                    "token_f1_random_neighbour": _round(s["baseline_random_neighbour"]["token_f1"]),
                    "finding_agreement": _round(s["draft"]["finding_agreement"]),
                    "finding_agreement_random_neighbour": _round(s["baseline_random_neighbour"]["finding_agreement"]),
                    "section_text": {name: {"n": v["n"], "token_f1": _round(v["token_f1"]),
                                            "token_f1_random_neighbour": _round(base.get("token_f1")),
                                            "finding_agreement": _round(v["finding_agreement"]),
                                            "finding_agreement_random_neighbour": _round(base.get("finding_agreement"))}
                                     for name, v in s["draft"]["sections"].items()
                                     for base in [s["baseline_random_neighbour"]["sections"].get(name, {})]}})
    return out


def _round(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def markdown_report(metrics: Mapping[str, Any]) -> str:
    """A short Markdown report of ``evaluate_drafts``'s metrics."""
    lines = ["# Draft evaluation", ""]
    lines += [f"**Note: {note}.**" for note in metrics["notes"]] + ([""] if metrics["notes"] else [])
    lines += [f"{metrics['studies']} drafted studies scored. Baselines (training mean or prevalence, and a random "
              f"neighbour: a random study's label or section text) from {metrics['baseline_studies']} "
              f"`{metrics['baseline_split'] or 'any'}` studies that are not scored (seed {metrics['seed']}); "
              "– = undefined (no such study, one class only, or no pair).", ""]
    ph = metrics.get("phenotypes", {})
    numeric = {k: v for k, v in ph.items() if v["kind"] == "numeric"}
    binary = {k: v for k, v in ph.items() if v["kind"] == "binary"}
    if numeric:
        lines += ["## Numeric phenotypes", "", "| phenotype | n | MAE | RMSE | R² | MAE train mean | MAE reduction (95 % bootstrap) "
                  "| MAE random neighbour |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['draft']['n']} | {_f(v['draft']['mae'])} | {_f(v['draft']['rmse'])} | {_f(v['draft']['r2'])} "
                  f"| {_f(v['baseline_train_mean']['mae'])} | {_f(v.get('mae_reduction_vs_train_mean'))}"
                  + (" ({:.2f}–{:.2f})".format(*v["mae_reduction_ci95"]) if "mae_reduction_ci95" in v else "")
                  + f" | {_f(v['baseline_random_neighbour']['mae'])} |"
                  for k, v in numeric.items()]
        lines.append("")
    if binary:
        lines += ["## Binary phenotypes", "", "| phenotype | n | positives | AUROC (95 % bootstrap) | AUROC prevalence "
                  "| AUROC random neighbour |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['draft']['n']} | {v['draft']['positives']} | {_f(v['draft']['auroc'])}"
                  + (" ({:.2f}–{:.2f})".format(*v["draft"]["auroc_ci95"]) if "auroc_ci95" in v["draft"] else "")
                  + f" | {_f(v['baseline_prevalence']['auroc'])} | {_f(v['baseline_random_neighbour']['auroc'])} |"
                  for k, v in binary.items()]
        lines.append("")
    if "sections" in metrics:
        d, b = metrics["sections"]["draft"], metrics["sections"]["baseline_random_neighbour"]
        lines += ["## Section text", "", f"{metrics['sections']['studies_with_report']} studies with a true report. "
                  "Token F1 and finding agreement per section (macro over sections in the last row).", "",
                  "| section | n | token F1 | random neighbour | finding agreement | random neighbour |",
                  "|---|---|---|---|---|---|"]
        for name, s in d["sections"].items():
            r = b["sections"].get(name, {})
            lines.append(f"| {name} | {s['n']} | {_f(s['token_f1'])} | {_f(r.get('token_f1'))} "
                         f"| {_f(s['finding_agreement'])} | {_f(r.get('finding_agreement'))} |")
        lines.append(f"| **macro** | | **{_f(d['token_f1'])}** | {_f(b['token_f1'])} | **{_f(d['finding_agreement'])}** "
                     f"| {_f(b['finding_agreement'])} |")
    return "\n".join(lines) + "\n"


def _f(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


__all__ = ["binary_metrics", "clauses", "draft_sections", "evaluate_drafts", "extract_finding", "finding_fields",
           "headline", "in_bank", "markdown_report", "negated", "numeric_metrics", "read_drafts", "section_agreement",
           "token_f1", "tokens"]
