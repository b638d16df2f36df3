"""Drafted (or reviewed) reports as DICOM Comprehensive SR documents, built with highdicom.

Content tree (after TID 2000 "Basic Diagnostic Imaging Report"):

- CONTAINER (LN 18748-4 "Diagnostic imaging report")
  - HAS OBS CONTEXT: the observer (the device ``medvid`` for a draft; the verifying person for a
    final report);
  - CONTAINS CONTAINER (DCM 121070 "Findings") → one TEXT item per section, named by the section
    (coding scheme ``99MEDVID``, code meaning = the section name);
  - CONTAINS CONTAINER (DCM 125007 "Measurement Group") → one NUM per numeric phenotype: ``ef`` as
    LOINC 10230-1 "Left ventricular Ejection fraction" in UCUM ``%``, others as ``99MEDVID`` codes
    (unit UCUM ``1``).

A draft is ``PARTIAL`` / ``UNVERIFIED`` / ``PRELIMINARY``; ``final=True`` makes it ``COMPLETE`` /
``VERIFIED`` (by ``observer``) / ``FINAL``. Patient module attributes are empty; the study is the
real StudyInstanceUID only when given, else a pseudonymous UID derived from ``study_key``. The SR
references no image instance (its evidence sequence is left out). A ``comment`` is a CONTAINS TEXT
(DCM 121106 "Comment") under the root. Text is written as UTF-8 (SpecificCharacterSet ``ISO_IR 192``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvid.errors import MedvidError
from medvid.utils import atomic_path

PRIVATE_SCHEME = "99MEDVID"
EF_CODE = hd.sr.CodedConcept("10230-1", "LN", "Left ventricular Ejection fraction")
_PERCENT = hd.sr.CodedConcept("%", "UCUM", "%")
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
_REPORT = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
_FINDINGS = hd.sr.CodedConcept("121070", "DCM", "Findings")
_MEASUREMENTS = hd.sr.CodedConcept("125007", "DCM", "Measurement Group")
_US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
UTF8 = "ISO_IR 192"  # SpecificCharacterSet: report text is Unicode ("LVEF ≥ 55 %", names with accents, CJK)
_EMPTY_PATIENT_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                        "StudyDate", "StudyTime", "ReferringPhysicianName")


def private_code(name: str) -> hd.sr.CodedConcept:
    """A ``99MEDVID`` concept for a section or phenotype name (code value from its hash, meaning = name)."""
    value = "MV" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, name[:64])


def pseudonymous_study_uid(study_key: str) -> str:
    """A StudyInstanceUID derived deterministically from the study's pseudonymous key."""
    return generate_uid(entropy_srcs=["medvid-study", study_key])


def build_report_sr(sections: Mapping[str, str], measurements: Mapping[str, float | None], *, study_key: str,
                    study_instance_uid: str | None = None, final: bool = False,
                    observer: str = "medvid", comment: str = "") -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR holding ``sections`` ({name: text}), numeric ``measurements`` ({name: value};
    ``None`` values are left out) and an optional ``comment`` (e.g. the loops a draft was made without).
    Draft unless ``final`` (then verified by ``observer``)."""
    if not study_key:
        raise MedvidError("build_report_sr: study_key is empty")
    texts = {name: " ".join(str(text).split()) for name, text in sections.items() if text and str(text).strip()}
    if not texts:
        raise MedvidError(f"study {study_key}: no section text to put in an SR")
    study_uid = study_instance_uid or pseudonymous_study_uid(study_key)
    if final and "^" not in observer:  # a name typed as free text is one DICOM PN component ("Jane Doe^")
        observer = f"{' '.join(observer.split())}^"
    digest = hashlib.sha256(json.dumps([texts, {k: v for k, v in measurements.items()}, final, observer]
                                       + ([comment] if comment else []),
                                       sort_keys=True, default=str).encode()).hexdigest()
    series_uid = generate_uid(entropy_srcs=["medvid-sr-series", study_key, str(final)])

    findings = hd.sr.ContainerContentItem(name=_FINDINGS, relationship_type="CONTAINS")
    findings.ContentSequence = [hd.sr.TextContentItem(name=private_code(name), value=text, relationship_type="CONTAINS")
                                for name, text in texts.items()]
    root = hd.sr.ContainerContentItem(name=_REPORT, template_id="2000")
    root.ContentSequence = [*_observer_context(observer, final), findings]
    if comment:
        root.ContentSequence.append(hd.sr.TextContentItem(name=codes.DCM.Comment, value=comment,
                                                          relationship_type="CONTAINS"))
    nums = [_num(name, float(value)) for name, value in measurements.items() if value is not None]
    if nums:
        group = hd.sr.ContainerContentItem(name=_MEASUREMENTS, relationship_type="CONTAINS")
        group.ContentSequence = nums
        root.ContentSequence.append(group)

    sr = hd.sr.ComprehensiveSR(
        evidence=[_study_stub(study_uid, study_key)], content=root, series_instance_uid=series_uid, series_number=900,
        sop_instance_uid=generate_uid(entropy_srcs=["medvid-sr", study_key, digest]), instance_number=1,
        manufacturer="medvid", is_complete=final, is_final=final, is_verified=final,
        verifying_observer_name=observer if final else None, verifying_organization="medvid" if final else None,
        series_description="medvid report" + ("" if final else " DRAFT"), specific_character_set=UTF8)
    if "CurrentRequestedProcedureEvidenceSequence" in sr:  # the stub is no real instance: reference none
        del sr.CurrentRequestedProcedureEvidenceSequence
    return sr


def write_report_sr(path: str | os.PathLike, sections: Mapping[str, str], measurements: Mapping[str, float | None], *,
                    study_key: str, study_instance_uid: str | None = None, final: bool = False,
                    observer: str = "medvid", comment: str = "") -> Path:
    """Build the SR (``build_report_sr``) and write it atomically to ``path``; returns ``path``."""
    sr = build_report_sr(sections, measurements, study_key=study_key, study_instance_uid=study_instance_uid,
                         final=final, observer=observer, comment=comment)
    path = Path(path)
    with atomic_path(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


def read_report_sr(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, float]]:
    """Sections and measurements back from an SR written by ``write_report_sr`` (highdicom's reader)."""
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise MedvidError(f"{path}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from exc
    sections: dict[str, str] = {}
    measurements: dict[str, float] = {}
    for item in sr.ContentSequence:
        for child in getattr(item, "ContentSequence", []):
            if child.ValueType == "TEXT":
                sections[child.name.meaning] = child.value
            elif child.ValueType == "NUM":
                key = "ef" if child.name == EF_CODE else child.name.meaning
                measurements[key] = float(child.value)
    return sections, measurements


def _num(name: str, value: float) -> hd.sr.NumContentItem:
    if name == "ef":
        return hd.sr.NumContentItem(name=EF_CODE, value=value, unit=_PERCENT, relationship_type="CONTAINS")
    return hd.sr.NumContentItem(name=private_code(name), value=value, unit=_NO_UNITS, relationship_type="CONTAINS")


def _observer_context(observer: str, final: bool) -> list:
    if final:
        return list(hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer)))
    return list(hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["medvid-device", observer]), name=observer)))


def _study_stub(study_uid: str, study_key: str) -> Dataset:
    """Study-level attributes highdicom copies into the SR: the study UID, everything else empty."""
    ds = Dataset()
    ds.SOPClassUID = _US_MULTIFRAME
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["medvid-stub", study_key])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["medvid-stub-series", study_key])
    for keyword in _EMPTY_PATIENT_STUDY:
        setattr(ds, keyword, "")
    return ds


__all__ = ["EF_CODE", "PRIVATE_SCHEME", "build_report_sr", "private_code", "pseudonymous_study_uid",
           "read_report_sr", "write_report_sr"]
