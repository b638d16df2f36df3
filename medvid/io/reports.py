"""Echo companion tables: reports (sectioned free text), phenotype labels, view labels.

On-disk contracts (formats.md): reports ``study_uid,report[,split]``; labels ``study_uid`` + one
column per phenotype (numbers, 0/1, blank = unknown); views ``sop_instance_uid,view``. After
``medvid ingest`` the same tables are keyed by pseudonyms (``study_key`` / ``video_key``).

A report is text in EchoPrime's sections, one ``Section Name: text`` block per section
(``format_report``); ``parse_sections`` reads any text whose sections start with a known name
followed by a colon, on a new line or after a sentence.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from medvid.errors import MedvidError
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

SPLITS = ("train", "val", "test")

_HEADER = re.compile(
    r"(?:^|(?<=[.;\n]))[ \t]*(" + "|".join(re.escape(s) for s in sorted(ECHO_SECTIONS, key=len, reverse=True))
    + r")[ \t]*:", flags=re.IGNORECASE | re.MULTILINE)
_CANONICAL = {s.lower(): s for s in ECHO_SECTIONS}
# A signature line ends the report body ("Electronically signed by …", "Reviewed by …").
_FOOTER = re.compile(r"^[ \t]*(?:electronically[ \t]+)?(?:signed|reviewed|dictated|confirmed|verified|transcribed)"
                     r"(?:[ \t]+electronically)?[ \t]+by\b", flags=re.IGNORECASE | re.MULTILINE)


def parse_sections(text: str) -> dict[str, str]:
    """Split a report into ``{section name: text}`` (canonical names, in order of appearance).

    Text before the first known header and from a signature line on is dropped; a repeated
    section is concatenated.
    """
    out: dict[str, str] = {}
    text = text or ""
    footer = _FOOTER.search(text)
    text = text[:footer.start()] if footer else text
    matches = list(_HEADER.finditer(text))
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = " ".join(text[m.end(): nxt.start() if nxt else len(text)].split())
        if not body:
            continue
        name = _CANONICAL[m.group(1).lower()]
        out[name] = f"{out[name]} {body}" if name in out else body
    return out


def format_report(sections: Mapping[str, str]) -> str:
    """``{section: text}`` → report text, one ``Name: text`` line per non-empty section in EchoPrime order."""
    unknown = set(sections) - set(ECHO_SECTIONS)
    if unknown:
        raise ValueError(f"unknown report sections: {sorted(unknown)}")
    return "\n".join(f"{name}: {' '.join(sections[name].split())}"
                     for name in ECHO_SECTIONS if sections.get(name, "").strip())


def read_table(path: str | os.PathLike, required: Sequence[str]) -> pd.DataFrame:
    """A CSV as strings (blank = ""), header names stripped; a clear error when it is missing, unreadable or
    lacks a ``required`` column."""
    path = Path(path)
    if not path.is_file():
        raise MedvidError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedvidError(f"{path}: not a readable CSV ({type(exc).__name__})") from exc
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MedvidError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    return df


def _read_csv(path: str | os.PathLike, key: str, required: tuple[str, ...]) -> pd.DataFrame:
    df = read_table(path, (key, *required))
    df[key] = df[key].str.strip()
    blank = df.index[df[key] == ""].tolist()
    if blank:
        raise MedvidError(f"{path}: empty {key} on data row(s) {[i + 1 for i in blank[:10]]}")
    dup = df[key][df[key].duplicated()].unique().tolist()
    if dup:
        raise MedvidError(f"{path}: {len(dup)} duplicated {key} value(s)")
    return df


def read_reports(path: str | os.PathLike, key: str = "study_uid") -> pd.DataFrame:
    """Reports table with columns ``key, report, split`` (split blank when not given)."""
    df = _read_csv(path, key, ("report",))
    if "split" not in df.columns:
        df["split"] = ""
    df["split"] = df["split"].str.strip().str.lower()
    bad = sorted(set(df["split"]) - set(SPLITS) - {""})
    if bad:
        raise MedvidError(f"{path}: split must be one of {SPLITS} or blank, got {bad}")
    return df[[key, "report", "split"]]


def read_labels(path: str | os.PathLike, key: str = "study_uid") -> pd.DataFrame:
    """Labels table: ``key`` plus numeric phenotype columns (blank → NaN = unknown)."""
    df = _read_csv(path, key, ())
    out = df[[key]].copy()
    for col in df.columns.drop(key):
        values = pd.to_numeric(df[col].str.strip().replace("", None), errors="coerce")
        bad = df.index[values.isna() & (df[col].str.strip() != "")].tolist()
        if bad:
            raise MedvidError(f"{path}: column {col!r} has non-numeric value(s) on data row(s) {[i + 1 for i in bad[:10]]}")
        out[col] = values.astype(float)
    return out


def read_views(path: str | os.PathLike, key: str = "sop_instance_uid") -> pd.DataFrame:
    """View labels ``key, view`` with every view one of ``medvid.vocab.ECHO_VIEWS``."""
    df = _read_csv(path, key, ("view",))
    df["view"] = df["view"].str.strip()
    bad = sorted(set(df["view"]) - set(ECHO_VIEWS))
    if bad:
        raise MedvidError(f"{path}: unknown view name(s) {bad}; known: {list(ECHO_VIEWS)}")
    return df[[key, "view"]]
