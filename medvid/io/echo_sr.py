"""Vendor measurement SRs as labels: Comprehensive / Enhanced SR objects in the echo templates (TID 5200
"Echocardiography Procedure Report", TID 5300 "Simplified Echo Procedure Report") → per-study measurements →
phenotype columns.

``read_measurements`` walks the SR content tree item by item (pydicom datasets, so one item highdicom would
refuse, such as a "not measured" NUM or a by-reference item, is skipped and counted instead of losing the
whole SR) and returns one row per numeric content item: concept code, meaning, value, unit, the modifiers a
sonographer reads it by (measurement method, finding site, image mode, derivation, selection status,
inherited from enclosing containers), the section it sits in, and pseudonymous keys of the SR instance and
of the image it was measured on (an IMAGE item, or the IMAGE a caliper SCOORD was drawn on).

``current_measurements`` resolves corrections: when a study has several measurement SRs, a measurement
that a higher-ranked SR (VERIFIED over UNVERIFIED, then COMPLETE over PARTIAL, then the later content
date/time, then the higher instance number) also holds is marked ``replaced``. ``derive_labels`` maps the
current rows to medvid phenotype names through ``configs/sr_measurements.yaml``, converting UCUM units with
``ucumvert`` (UCUM → pint). Nothing here returns an identifier: UIDs become keyed pseudonyms with the
ingest's salt, and the content date that ranks versions never leaves memory.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pydicom
import yaml

from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.utils import pseudonym

# Concept names of the modifiers kept (SNOMED CT and the retired SNOMED RT codes vendors still write).
_MODIFIERS = {("SCT", "370129005"): "method", ("SRT", "G-C036"): "method", ("DCM", "370129005"): "method",
              ("SCT", "363698007"): "site", ("SRT", "G-C0E3"): "site",
              ("SCT", "399264008"): "image_mode", ("SRT", "G-0373"): "image_mode",
              ("DCM", "121401"): "derivation", ("DCM", "121404"): "selection"}
_SCOORDS = {"SCOORD", "SCOORD3D"}

MEASUREMENT_COLUMNS = ["study_key", "instance_key", "image_key", "section", "concept_code", "concept_meaning",
                       "value", "unit", "method_code", "method_meaning", "site_meaning", "image_mode", "derivation",
                       "selected", "replaced"]
_VERSION = "_version"  # a row's SR rank, kept in memory only (it is built from the SR's content date)


@dataclass
class SRReading:
    """The numeric measurements of one SR (``MEASUREMENT_COLUMNS`` plus the in-memory version rank) and the
    content items skipped, by reason (``not_measured``, ``by_reference``, ``unreadable``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def code_str(concept: Any) -> str:
    """``SCHEME:VALUE`` of a coded concept (e.g. ``LN:10230-1``)."""
    return f"{concept.CodingSchemeDesignator}:{concept.CodeValue}"


def read_measurements(path: str | os.PathLike, salt: str) -> SRReading:
    """Numeric measurements of one SR file, item by item (pseudonymous keys).

    Raises ``ValueError`` for a file without an SR content tree (e.g. not an SR).
    """
    from medvid.io.dicom import open_dataset

    with open_dataset(Path(path)) as (stream, _):  # a deflated SR inflates only up to the bound
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
    if "ContentSequence" not in ds or "StudyInstanceUID" not in ds:
        raise ValueError("no SR content tree")
    verified = str(ds.get("VerificationFlag", "")).upper() == "VERIFIED"
    complete = str(ds.get("CompletionFlag", "")).upper() == "COMPLETE"
    when = f"{ds.get('ContentDate', '') or '':0>8}{str(ds.get('ContentTime', '') or '').split('.')[0]:0<6}"
    base = {"study_key": pseudonym(str(ds.StudyInstanceUID), salt, prefix="st_"),
            "instance_key": pseudonym(str(ds.get("SOPInstanceUID", "")), salt, prefix="vi_"),
            _VERSION: f"{int(verified)}{int(complete)}|{when}|{int(ds.get('InstanceNumber') or 0):010d}"}
    reading = SRReading()
    skipped: Counter[str] = Counter()
    _walk(ds.ContentSequence, {"section": ""}, base, salt, reading.rows, skipped, depth=0)
    reading.skipped = dict(skipped)
    return reading


def _walk(items: Iterable[Any], context: dict[str, Any], base: dict[str, str], salt: str, rows: list[dict],
          skipped: Counter, depth: int) -> None:
    items = list(items)
    context = {**context, **_modifiers(items, salt)}
    for item in items:
        try:
            if "ReferencedContentItemIdentifier" in item:  # by reference: the item it points to is read where it is
                skipped["by_reference"] += 1
                continue
            kind = str(item.get("ValueType", ""))
            if kind == "CONTAINER" and "ContentSequence" in item:
                section = context["section"] or (_meaning(item) if depth == 0 else "")
                _walk(item.ContentSequence, {**context, "section": section}, base, salt, rows, skipped, depth + 1)
            elif kind == "NUM":
                row = _num_row(item, context, salt)
                if row is None:
                    skipped["not_measured"] += 1
                else:
                    rows.append({**base, **row})
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            skipped["unreadable"] += 1


def _num_row(item: Any, context: dict[str, Any], salt: str) -> dict[str, Any] | None:
    """One NUM item as a row (None when it holds no value: a "not measured" item with a qualifier)."""
    measured = item.get("MeasuredValueSequence") or []
    if not measured:
        return None
    value_item = measured[0]
    value = value_item.get("FloatingPointValue")
    value = float(value_item.NumericValue if value is None else value)
    units = value_item.get("MeasurementUnitsCodeSequence") or []
    own = {**context, **_modifiers(item.get("ContentSequence", []), salt)}
    name = item.ConceptNameCodeSequence[0]
    method, site = own.get("method"), own.get("site")
    return {"image_key": own.get("image", ""), "section": own["section"], "concept_code": code_str(name),
            "concept_meaning": str(name.CodeMeaning), "value": value,
            "unit": str(units[0].CodeValue) if units else "",
            "method_code": code_str(method) if method is not None else "",
            "method_meaning": str(method.CodeMeaning) if method is not None else "",
            "site_meaning": str(site.CodeMeaning) if site is not None else "",
            "image_mode": _meaning_of(own.get("image_mode")), "derivation": _meaning_of(own.get("derivation")),
            "selected": own.get("selection") is not None, "replaced": False}


def _modifiers(items: Iterable[Any], salt: str) -> dict[str, Any]:
    """Concept modifiers (HAS CONCEPT MOD) among ``items`` by kind, and the source image: an IMAGE item, or the
    IMAGE under a SCOORD (a caliper drawn on an image)."""
    found: dict[str, Any] = {}
    for item in items:
        try:
            kind = str(item.get("ValueType", ""))
            if kind == "CODE" and str(item.get("RelationshipType", "")) == "HAS CONCEPT MOD":
                name = item.ConceptNameCodeSequence[0]
                slot = _MODIFIERS.get((str(name.CodingSchemeDesignator), str(name.CodeValue)))
                if slot:
                    found[slot] = item.ConceptCodeSequence[0]
            elif kind == "IMAGE" and "ReferencedSOPSequence" in item:
                found["image"] = pseudonym(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID), salt,
                                           prefix="vi_")
            elif kind in _SCOORDS and "image" not in found:
                if image := _modifiers(item.get("ContentSequence", []), salt).get("image"):
                    found["image"] = image
        except (AttributeError, IndexError, KeyError, TypeError):
            continue  # a malformed modifier leaves the measurement without it
    return found


def _meaning(item: Any) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeMeaning) if names else ""


def _meaning_of(code: Any) -> str:
    return str(code.CodeMeaning) if code is not None else ""


def current_measurements(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The rows of all SRs as a ``MEASUREMENT_COLUMNS`` table, a row marked ``replaced`` when a higher-ranked
    SR of the same study (see the module doc) holds the same measurement (concept, method, site, image mode)."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=MEASUREMENT_COLUMNS)
    df = df.reindex(columns=[*MEASUREMENT_COLUMNS, _VERSION])
    df[_VERSION] = df[_VERSION].fillna("")
    what = ["study_key", "concept_code", "method_code", "site_meaning", "image_mode"]
    best = df.groupby(what, dropna=False)[_VERSION].transform("max")
    df["replaced"] = df[_VERSION] < best
    return df[MEASUREMENT_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ mapping
@dataclass(frozen=True)
class Rule:
    """One way to read a phenotype: a concept (code or, for vendors' private codes, meaning), optional method."""

    phenotype: str
    code: str | None = None
    meaning: str | None = None
    method: str | None = None
    unit: str | None = None

    def matches(self, row: dict[str, Any]) -> bool:
        if self.code is not None and str(row["concept_code"]).lower() != self.code.lower():
            return False
        if self.meaning is not None and _norm(row["concept_meaning"]) != _norm(self.meaning):
            return False
        return self.method is None or str(row["method_code"]).lower() == self.method.lower()

    def convert(self, row: dict[str, Any]) -> float | None:
        """The row's value in the rule's unit; None when the units cannot be converted."""
        return convert_unit(float(row["value"]), str(row["unit"] or ""), self.unit)


def convert_unit(value: float, have: str, want: str | None) -> float | None:
    """``value`` in UCUM unit ``have`` expressed in ``want`` (None: as it is); None when not convertible."""
    if want is None or _norm_unit(have) == _norm_unit(want):
        return value
    if not have.strip():  # no unit: nothing says what the number measures in
        return None
    have_q, want_q = _ucum(have), _ucum(want)
    if have_q is None or want_q is None:
        return None
    try:
        return float((value * have_q).to(want_q).magnitude)
    except Exception:  # noqa: BLE001 - pint's DimensionalityError and friends: not the same kind of quantity
        return None


@lru_cache(maxsize=None)
def _registry():
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@lru_cache(maxsize=1024)
def _ucum(unit: str):
    """A UCUM unit as a pint quantity (annotations such as ``{ratio}`` are dimensionless); None if invalid."""
    text = re.sub(r"\{[^}]*\}", "", unit.strip()) or "1"
    try:
        return _registry().from_ucum(text)
    except Exception:  # noqa: BLE001 - an invalid UCUM string cannot be converted
        return None


def load_rules(path: str | os.PathLike | None = None) -> list[Rule]:
    """Rules of a mapping file (default: the shipped ``configs/sr_measurements.yaml``), in priority order."""
    path = Path(path) if path else config_dir() / "sr_measurements.yaml"
    if not path.is_file():
        raise MedvidError(f"{path}: SR measurement mapping not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rules: list[Rule] = []
    for phenotype, entries in (data.get("phenotypes") or {}).items():
        for entry in entries:
            unknown = set(entry) - {"code", "meaning", "method", "unit"}
            if unknown or not (entry.get("code") or entry.get("meaning")):
                raise MedvidError(f"{path}: phenotype {phenotype!r}: each rule needs code or meaning "
                                  f"(and optionally method, unit); got {sorted(entry)}")
            if entry.get("unit") is not None and _ucum(str(entry["unit"])) is None:
                raise MedvidError(f"{path}: phenotype {phenotype!r}: {entry['unit']!r} is not a UCUM unit")
            rules.append(Rule(str(phenotype), **{k: str(v) for k, v in entry.items()}))
    return rules


def derive_labels(measurements: pd.DataFrame, rules: list[Rule],
                  refused: Counter | None = None) -> pd.DataFrame:
    """``study_key`` + one column per phenotype from the current (not ``replaced``) rows: per study, the first
    rule (file order) that has a value gives it; among that rule's rows the one the operator selected, else the
    vendor's derived value (mean first), else the mean of the repeats. Rows whose unit cannot be converted to
    the rule's are counted in ``refused`` (``"phenotype: unit → wanted"``)."""
    phenotypes = list(dict.fromkeys(r.phenotype for r in rules))
    current = measurements[~measurements["replaced"].astype(bool)] if "replaced" in measurements else measurements
    out: dict[str, dict[str, float]] = {}
    for study, group in current.groupby("study_key", sort=True):
        rows = group.to_dict("records")
        values: dict[str, float] = {}
        for rule in rules:
            if rule.phenotype in values:
                continue
            hits = []
            for row in (r for r in rows if rule.matches(r)):
                if (v := rule.convert(row)) is None:
                    if refused is not None:
                        refused[f"{rule.phenotype}: {row['unit'] or 'no unit'} → {rule.unit}"] += 1
                else:
                    hits.append((row, v))
            if hits:
                values[rule.phenotype] = _pick(hits)
        if values:
            out[str(study)] = values
    df = pd.DataFrame.from_dict(out, orient="index", columns=phenotypes)
    df = df.dropna(axis=1, how="all")
    return df.rename_axis("study_key").reset_index()


def _pick(hits: list[tuple[dict[str, Any], float]]) -> float:
    """Selected > derived (mean first) > the mean of the repeats."""
    for keep in (lambda r: bool(r.get("selected")), lambda r: _norm(r.get("derivation") or "") == "mean",
                 lambda r: bool(r.get("derivation"))):
        chosen = [v for r, v in hits if keep(r)]
        if chosen:
            return sum(chosen) / len(chosen)
    return sum(v for _, v in hits) / len(hits)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[’′‘`]", "'", str(text)).lower().split())


def _norm_unit(unit: str) -> str:
    return str(unit).lower().replace("^", "").replace("²", "2").replace(" ", "")
