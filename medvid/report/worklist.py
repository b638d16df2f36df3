"""The reporting worklist's logic (what the review app lists, in which order, and what a search finds), free of any
user interface.

Order: studies awaiting review (``draft``, ``edited``) first, then ``signed off``, ``error`` and ``no draft``;
within a status by priority flags (:func:`priority_flags`: a severely reduced EF estimate, a moderate or larger
pericardial effusion, a section whose text conflicts with a call), then oldest first, then by study key.

Search (:func:`matches`) reads findings, not strings: a query matches a clause of a section's text that holds all
its words and is not negated (the negation cues of :func:`medvid.report.evaluate.negated`: no, not, without,
absent, none, intact), so "effusion" does not match "No pericardial effusion."; a query that starts with a
negation ("no effusion") matches the negated clauses instead. A positive phenotype call matches its name
("effusion" finds a ``pericardial_effusion`` call of 1). A rule, not an NLP model: clauses split at ``. ; ,``,
"with" and "but" (:func:`medvid.report.evaluate.clauses`), so "hypokinesis with no focal abnormality" is two.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

from medvid.report.evaluate import clauses, finding_fields, negated

SEVERE_EF_BELOW = 30.0  # % (ASE: an LVEF below 30 % is severely reduced)
FLAGS = ("severe_ef", "large_effusion", "conflict")  # most urgent first
STATUSES = ("draft", "edited", "signed off", "error", "no draft")
_STATUS_RANK = {"draft": 0, "edited": 0, "signed off": 1, "error": 2, "no draft": 3}
_NEGATION_QUERY = re.compile(r"^(?:no|not|without|absent)\b\s*")


def priority_flags(draft: Mapping[str, Any]) -> list[str]:
    """A drafts.jsonl row's priority flags, most urgent first: ``severe_ef`` (EF estimate below
    ``SEVERE_EF_BELOW`` %), ``large_effusion`` (a positive pericardial effusion call whose Pericardium text grades
    it moderate or larger), ``conflict`` (a section's text contradicts a call)."""
    phenotypes, sections = draft.get("phenotypes") or {}, draft.get("sections") or {}
    ef = (phenotypes.get("ef") or {}).get("value")
    effusion = (phenotypes.get("pericardial_effusion") or {}).get("call")
    grade = finding_fields((sections.get("Pericardium") or {}).get("text", "")).get("severity")
    found = {"severe_ef": ef is not None and ef < SEVERE_EF_BELOW,
             "large_effusion": bool(effusion) and grade in ("moderate", "severe"),
             "conflict": any(isinstance(s, Mapping) and s.get("conflict") for s in sections.values())}
    return [f for f in FLAGS if found[f]]


def order(entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Worklist order of ``entries`` (``study_key``, ``status`` one of ``STATUSES``, optional ``draft`` = its
    drafts.jsonl row and ``time`` = a sortable age such as an ISO date; missing times last): awaiting review
    first, then by priority flags, oldest first, study key."""
    def key(e: Mapping[str, Any]) -> tuple:
        flags = priority_flags(e.get("draft") or {})
        urgency = tuple(f not in flags for f in FLAGS)  # False sorts first: a flag present ranks higher
        time = e.get("time")
        return (_STATUS_RANK.get(str(e.get("status")), len(STATUSES)), urgency, time is None, str(time or ""),
                str(e.get("study_key", "")))
    return sorted(entries, key=key)


def status_counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many studies have each status, every status of ``STATUSES`` listed (others counted under their name)."""
    counts = {s: 0 for s in STATUSES}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts


def matches(query: str, sections: Mapping[str, str], phenotypes: Optional[Mapping[str, Mapping[str, Any]]] = None) -> bool:
    """Whether a study's findings match ``query``: its section texts (``{name: text}``) clause by clause, negation
    respected, and its positive phenotype calls by name. An empty query matches everything."""
    q = " ".join(query.lower().split())
    if not q:
        return True
    negative = bool(_NEGATION_QUERY.match(q))
    words = _NEGATION_QUERY.sub("", q).split()
    if not words:
        return False
    for text in sections.values():
        for clause in clauses(text):
            if all(re.search(rf"\b{re.escape(w)}", clause) for w in words) and negated(clause) == negative:
                return True
    if negative:
        return False
    return any(b.get("call") == 1 and all(w in name.replace("_", " ") for w in words)
               for name, b in (phenotypes or {}).items())
