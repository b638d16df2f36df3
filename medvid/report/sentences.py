"""Shared sentences: a report bank keeps only the sentences that the reports of at least ``k`` distinct patients
contain, so a sentence unique to one patient (an identifier the scrubber missed, a rare history) is never
copied into another patient's draft. EchoPrime's phrase vocabulary is built the same way.

A sentence's identity is its text normalised (case, whitespace, trailing punctuation) with each measurement
number replaced by ``<#>``: "LVEF 55%." and "lvef 60%" differ only in their number and count as one sentence
across patients, while a kept row carries its own study's real numbers. Numbers shaped like identifiers (five
or more digits, dates and phone numbers written with ``-`` or ``/``, years, a day next to a month name) stay
literal, so a sentence that differs by one of them is not shared.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Mapping

from medvid.errors import MedvidError

# a sentence ends at . ! ? or ; followed by white space (a decimal point is never followed by a space)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b\.?")
# an identifier-shaped number (kept as written) or a measurement number (templated)
_NUMBER = re.compile(
    r"(?P<id>(?<![\d.])(?:\d{5,}"               # record, accession, pager or phone numbers
    r"|\d{1,4}(?:[-/]\d{1,4}){2,}"               # 03/15/2023, 555-123-4567
    r"|\d{3}-\d{4}"                              # 555-1234
    r"|(?:19|20)\d\d)(?![\d.])"                  # a year
    rf"|\b\d{{1,2}}\s+{_MONTH}|\b{_MONTH}\s+\d{{1,2}}\b)"  # 15 Mar, March 15
    r"|\d+(?:[.,]\d+)?", flags=re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """The sentences of a section's text, in order (white space collapsed, empty ones left out)."""
    return [s for s in (" ".join(p.split()) for p in _SENTENCE_END.split(text)) if s]


def sentence_key(sentence: str) -> str:
    """A sentence's identity across patients: lower case, single spaces, no trailing punctuation, each
    measurement number ``<#>`` (identifier-shaped numbers kept as written)."""
    text = " ".join(sentence.lower().split()).rstrip(" .;!?")
    return _NUMBER.sub(lambda m: m.group() if m.group("id") else "<#>", text)


@dataclass
class SharedSentences:
    """What :func:`keep_shared_sentences` kept: the texts (``{study: {section: text}}``; a section none of whose
    sentences is shared has the text ``""``: its text is withheld, while a video bank keeps the row so its
    study's labels still vote) and the counts a bank records."""

    texts: dict[Hashable, dict[str, str]]
    min_patients: int
    sentences_kept: int
    sentences_dropped: int
    sections_withheld: int
    studies_withheld: int

    def summary(self) -> dict[str, int]:
        """The counts for a bank's manifest and build summary."""
        return {"min_patients": self.min_patients, "sentences_kept": self.sentences_kept,
                "sentences_dropped": self.sentences_dropped, "sections_withheld": self.sections_withheld,
                "studies_withheld": self.studies_withheld}

    def with_text(self) -> dict[Hashable, dict[str, str]]:
        """The sections that kept text (a text bank embeds the text itself, so withheld sections have no row)."""
        out = {study: {s: t for s, t in sections.items() if t} for study, sections in self.texts.items()}
        return {study: sections for study, sections in out.items() if sections}


def keep_shared_sentences(texts: Mapping[Hashable, Mapping[str, str]], patients: Mapping[Hashable, str],
                          min_patients: int) -> SharedSentences:
    """Keep, in each study's ``texts`` (``{study: {section: text}}``), the sentences whose :func:`sentence_key`
    occurs in the texts of at least ``min_patients`` distinct patients (``patients``: study -> patient key; a
    study missing or with an empty key is its own patient). A section is its kept sentences in order (``""``
    when none is kept). Refused (``MedvidError``) when studies were given and no sentence is kept."""
    if min_patients < 1:
        raise MedvidError(f"min_patients must be at least 1, got {min_patients}")
    split = {study: {s: split_sentences(t) for s, t in sections.items()} for study, sections in texts.items()}
    seen: defaultdict[str, set[Hashable]] = defaultdict(set)
    for study, sections in split.items():
        patient = patients.get(study) or ("study", study)
        for sentences in sections.values():
            for sentence in sentences:
                sharers = seen[sentence_key(sentence)]
                if len(sharers) < min_patients:  # k patients are enough: each set stays at most k long
                    sharers.add(patient)
    kept_texts: dict[Hashable, dict[str, str]] = {}
    kept = dropped = withheld = 0
    for study, sections in split.items():
        out = {}
        for s, sentences in sections.items():
            keep = [x for x in sentences if len(seen[sentence_key(x)]) >= min_patients]
            kept, dropped, withheld = kept + len(keep), dropped + len(sentences) - len(keep), withheld + (not keep)
            out[s] = " ".join(keep)
        kept_texts[study] = out
    if split and not kept:
        raise MedvidError(f"no report sentence is shared by {min_patients} distinct patients among {len(split)} "
                          "studies: nothing to put in the bank (min_patients sets how many must share one)")
    studies_withheld = sum(not any(t for t in sections.values()) for sections in kept_texts.values())
    return SharedSentences(kept_texts, min_patients, kept, dropped, withheld, studies_withheld)
