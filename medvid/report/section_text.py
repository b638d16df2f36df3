"""Which text a drafted section gets: consistent with the draft's own phenotype calls by construction.

A section's candidates are its neighbours' texts, nearest first (or, for a section whose retrieval did not beat
the bank's prior on validation, ``bank calibrate``'s choice, the bank's prior texts: :func:`prior_texts`). The
section gets the nearest candidate (or the ``consensus`` vote of the nearest) whose finding agrees with every call
of the section's phenotypes (:func:`text_call`); when none agrees it keeps the nearest text and says so in a
``conflict`` with an agreeing alternative from the bank's prior texts (``null`` when the bank has none).

What a text says about a phenotype (:func:`text_call`) reads :func:`medvid.report.evaluate.finding_fields`:
regurgitation counts as positive from moderate up (mild and trivial are not clinically significant); an
effusion of any size is positive; reduced EF is an EF below ``REDUCED_EF_BELOW`` % when the text gives a number,
else a moderately or severely reduced function; LV/LA dilation is the stated size. A text silent on a phenotype,
and a phenotype without a rule, never conflict.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from medvid.report.evaluate import extract_finding, finding_fields, tokens

REDUCED_EF_BELOW = 50.0  # % (ASE/EACVI: an LVEF below 50 % is reduced)
PRIOR_SAMPLE = 500       # bank rows per section the prior texts are chosen from (evenly spaced)
PRIOR_CANDIDATES = 20    # most frequent texts of that sample ranked as prior texts

_EF_NUMBER = re.compile(r"(?:ejection fraction|\blvef\b|\bef\b)[^.%\d]{0,40}?(\d{1,2}(?:\.\d+)?)\s*%")


def _regurgitation(f: Mapping[str, str], text: str) -> Optional[int]:
    if f.get("presence") == "absent" or f.get("severity") in ("none", "trivial", "mild"):
        return 0
    return 1 if f.get("severity") in ("moderate", "severe") else None


def _presence(f: Mapping[str, str], text: str) -> Optional[int]:
    return {"present": 1, "absent": 0}.get(f.get("presence", ""))


def _reduced_ef(f: Mapping[str, str], text: str) -> Optional[int]:
    if (m := _EF_NUMBER.search(text.lower())):
        return int(float(m.group(1)) < REDUCED_EF_BELOW)
    if f.get("function") == "normal":
        return 0
    return 1 if f.get("function") == "reduced" and f.get("severity") in ("moderate", "severe") else None


def _dilation(f: Mapping[str, str], text: str) -> Optional[int]:
    return {"dilated": 1, "normal": 0}.get(f.get("size", ""))


RULES: dict[str, Callable[[Mapping[str, str], str], Optional[int]]] = {
    "mitral_regurgitation": _regurgitation, "tricuspid_regurgitation": _regurgitation,
    "pericardial_effusion": _presence, "reduced_ef": _reduced_ef, "lv_dilation": _dilation, "la_dilation": _dilation}


def text_call(phenotype: str, text: str) -> Optional[int]:
    """What ``text`` says about a binary phenotype: 1 (positive), 0 (negative) or None (silent, or no rule for it)."""
    rule = RULES.get(phenotype)
    return None if rule is None else rule(finding_fields(text), text or "")


def disagreements(text: str, calls: Mapping[str, Optional[int]]) -> list[str]:
    """The phenotypes whose call (0/1; None = no call) ``text`` contradicts."""
    return [p for p, c in calls.items() if c is not None and (t := text_call(p, text)) is not None and t != int(c)]


def section_calls(phenotypes: Mapping[str, Mapping[str, Any]], pheno_section: Mapping[str, str],
                  section: str) -> dict[str, Optional[int]]:
    """The binary calls of a draft's ``phenotypes`` block that the text of ``section`` speaks for."""
    return {p: b.get("call") for p, b in phenotypes.items()
            if b.get("kind") == "binary" and pheno_section.get(p) == section and p in RULES}


def contradictions(draft: Mapping[str, Any], pheno_section: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every section text of a drafts.jsonl row that contradicts one of its calls: ``{section, phenotype,
    flagged}`` (``flagged``: the section carries a ``conflict`` naming it; an unflagged one is silent)."""
    out = []
    for name, sec in draft.get("sections", {}).items():
        flagged = set((sec.get("conflict") or {}).get("phenotypes", []))
        for p in disagreements(sec.get("text", ""), section_calls(draft.get("phenotypes", {}), pheno_section, name)):
            out.append({"section": name, "phenotype": p, "flagged": p in flagged})
    return out


def choose_text(candidates: Iterable[tuple[str, float]], calls: Mapping[str, Optional[int]], consensus: int,
                alternatives: Iterable[str] = ()) -> dict[str, Any]:
    """A section's text from ``candidates`` ``(text, similarity)``, nearest first: the similarity-weighted vote of
    the ``consensus`` nearest that agree with ``calls`` (ties: the nearer); when none agrees, that vote over the
    nearest texts and a ``conflict`` ``{phenotype, phenotypes, call, text_finding, alternative}`` (the first of
    ``alternatives`` that agrees, else None). Returns ``{"text", "skipped", "conflict"}``; ``skipped`` = nearer
    candidates passed over for contradicting a call."""
    n = max(1, consensus)
    agreeing: list[tuple[str, float]] = []
    nearest: list[tuple[str, float]] = []
    skipped = 0
    for text, sim in candidates:
        if len(nearest) < n:
            nearest.append((text, sim))
        if disagreements(text, calls):
            skipped += not agreeing
            continue
        agreeing.append((text, sim))
        if len(agreeing) >= n:
            break
    if agreeing:
        return {"text": _vote(agreeing), "skipped": skipped, "conflict": None}
    if not nearest:
        return {"text": "", "skipped": 0, "conflict": None}
    text = _vote(nearest)
    wrong = disagreements(text, calls)
    conflict = {"phenotype": wrong[0], "phenotypes": wrong, "call": int(calls[wrong[0]]),
                "text_finding": extract_finding(text),
                "alternative": next((a for a in alternatives if not disagreements(a, calls)), None)}
    return {"text": text, "skipped": 0, "conflict": conflict}


def _vote(found: list[tuple[str, float]]) -> str:
    votes: dict[str, float] = defaultdict(float)
    for text, sim in found:
        votes[text] += sim
    return max((t for t, _ in found), key=lambda t: votes[t])  # ties: the nearer text (max keeps the first)


def prior_texts(texts: list[str]) -> list[str]:
    """A section's prior texts, best first: the ``PRIOR_CANDIDATES`` most frequent of ``texts`` (empty ones left
    out) ranked by their mean token F1 against all of ``texts`` (the text a reader would expect with no image:
    its expected F1 is at least that of a random report's text), ties by frequency."""
    counts = Counter(t for t in texts if t)
    if not counts:
        return []
    bags = {t: Counter(tokens(t)) for t in counts}

    def f1(a: Counter, b: Counter) -> float:
        overlap = sum((a & b).values())
        return 0.0 if not overlap else 2 * overlap / (sum(a.values()) + sum(b.values()))

    total = sum(counts.values())
    candidates = [t for t, _ in counts.most_common(PRIOR_CANDIDATES)]
    score = {c: sum(n * f1(bags[c], bags[t]) for t, n in counts.items()) / total for c in candidates}
    return sorted(candidates, key=lambda c: (-round(score[c], 9), -counts[c]))


def sample_rows(start: int, stop: int, size: int = PRIOR_SAMPLE) -> np.ndarray:
    """Up to ``size`` evenly spaced rows of ``[start, stop)`` (all of them when fewer)."""
    if stop - start <= size:
        return np.arange(start, stop)
    return np.unique(np.linspace(start, stop - 1, size).round().astype(np.int64))
