"""Vendor measurement SRs as labels: Comprehensive / Enhanced SR objects in the echo templates (TID 5200
"Echocardiography Procedure Report", TID 5300) → per-study measurements → phenotype columns.

``read_measurements`` walks the content tree read by highdicom (``highdicom.sr.srread``) and returns one
row per numeric content item: concept code, meaning, value, unit, measurement method and finding site
(concept modifiers, inherited from enclosing containers), the section it sits in, and pseudonymous keys
of the SR instance and of the image it was measured on. ``derive_labels`` maps those rows to medvid
phenotype names through ``configs/sr_measurements.yaml``. Nothing here returns an identifier: UIDs are
turned into keyed pseudonyms with the ingest's salt.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.utils import pseudonym

# Concept names of the modifiers kept (SNOMED CT and the retired SNOMED RT codes vendors still write).
_METHOD = {("SCT", "370129005"), ("SRT", "G-C036")}
_SITE = {("SCT", "363698007"), ("SRT", "G-C0E3")}
# UCUM unit → factor to the rule's unit (lengths only: the common mm/cm mix of vendor SRs).
_LENGTH_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}

MEASUREMENT_COLUMNS = ["study_key", "instance_key", "image_key", "section", "concept_code", "concept_meaning",
                       "value", "unit", "method_code", "method_meaning", "site_meaning"]


def code_str(concept: Any) -> str:
    """``SCHEME:VALUE`` of a coded concept (e.g. ``LN:10230-1``)."""
    return f"{concept.scheme_designator}:{concept.value}"


def read_measurements(path: str | os.PathLike, salt: str) -> list[dict[str, Any]]:
    """Numeric measurements of one SR file as rows with ``MEASUREMENT_COLUMNS`` (pseudonymous keys).

    Raises ``ValueError`` for an SR IOD highdicom cannot read (e.g. Basic Text SR).
    """
    import highdicom as hd

    try:
        sr = hd.sr.srread(path)
    except RuntimeError as exc:  # an IOD highdicom does not model
        raise ValueError(str(exc)) from exc
    base = {"study_key": pseudonym(str(sr.StudyInstanceUID), salt, prefix="st_"),
            "instance_key": pseudonym(str(sr.SOPInstanceUID), salt, prefix="vi_")}
    rows: list[dict[str, Any]] = []
    _walk(sr.content, {"section": "", "method": None, "site": None, "image": None}, base, salt, rows)
    return rows


def _walk(items: Iterable[Any], context: dict[str, Any], base: dict[str, str], salt: str, rows: list[dict]) -> None:
    items = list(items)
    context = {**context, **_modifiers(items, salt)}
    for item in items:
        kind = item.value_type.value
        if kind == "CONTAINER" and "ContentSequence" in item:  # section: the container just below the root
            section = context["section"] or (str(item.name.meaning) if item.relationship_type else "")
            _walk(item.ContentSequence, {**context, "section": section}, base, salt, rows)
        elif kind == "NUM" and "MeasuredValueSequence" in item:
            own = {**context, **_modifiers(item.get("ContentSequence", []), salt)}
            rows.append({**base, "image_key": own["image"] or "", "section": own["section"],
                         "concept_code": code_str(item.name), "concept_meaning": str(item.name.meaning),
                         "value": float(item.value), "unit": str(item.unit.value),
                         "method_code": code_str(own["method"]) if own["method"] is not None else "",
                         "method_meaning": str(own["method"].meaning) if own["method"] is not None else "",
                         "site_meaning": str(own["site"].meaning) if own["site"] is not None else ""})


def _modifiers(items: Iterable[Any], salt: str) -> dict[str, Any]:
    """Method / finding site (HAS CONCEPT MOD) and source image (INFERRED FROM / SELECTED FROM) among ``items``."""
    found: dict[str, Any] = {}
    for item in items:
        relation = item.relationship_type.value if item.relationship_type else ""
        name = (item.name.scheme_designator, item.name.value)
        if relation == "HAS CONCEPT MOD" and item.value_type.value == "CODE":
            if name in _METHOD:
                found["method"] = item.value
            elif name in _SITE:
                found["site"] = item.value
        elif item.value_type.value == "IMAGE" and "ReferencedSOPSequence" in item:
            found["image"] = pseudonym(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID), salt, prefix="vi_")
    return found


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
        if self.code is not None and row["concept_code"].lower() != self.code.lower():
            return False
        if self.meaning is not None and _norm(row["concept_meaning"]) != _norm(self.meaning):
            return False
        return self.method is None or row["method_code"].lower() == self.method.lower()

    def convert(self, row: dict[str, Any]) -> float | None:
        """The row's value in the rule's unit; None when the units are incompatible."""
        have, want = _norm_unit(row["unit"]), _norm_unit(self.unit or row["unit"])
        if have == want:
            return float(row["value"])
        if have in _LENGTH_M and want in _LENGTH_M:
            return float(row["value"]) * _LENGTH_M[have] / _LENGTH_M[want]
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
            rules.append(Rule(str(phenotype), **{k: str(v) for k, v in entry.items()}))
    return rules


def derive_labels(measurements: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """``study_key`` + one column per phenotype: per study, the first rule (file order) that has a value
    gives it (the mean when it was measured several times)."""
    phenotypes = list(dict.fromkeys(r.phenotype for r in rules))
    out: dict[str, dict[str, float]] = {}
    for study, group in measurements.groupby("study_key", sort=True):
        rows = group.to_dict("records")
        values: dict[str, float] = {}
        for rule in rules:
            if rule.phenotype in values:
                continue
            hits = [v for row in rows if rule.matches(row) and (v := rule.convert(row)) is not None]
            if hits:
                values[rule.phenotype] = sum(hits) / len(hits)
        if values:
            out[str(study)] = values
    df = pd.DataFrame.from_dict(out, orient="index", columns=phenotypes)
    df = df.dropna(axis=1, how="all")
    return df.rename_axis("study_key").reset_index()


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[’′‘`]", "'", str(text)).lower().split())


def _norm_unit(unit: str) -> str:
    return str(unit).lower().replace("^", "").replace("²", "2").replace(" ", "")
