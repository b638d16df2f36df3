"""Drafted and reviewed echo reports as DICOM Comprehensive SR documents (highdicom), after TID 5200.

Content tree (root: DCM 125200 "Adult Echocardiography Procedure Report", template 5200):

- HAS CONCEPT MOD: Language of Content Item and Descendants (``en-US``; mandatory in TID 2000/5200);
- HAS OBS CONTEXT: the device observer ``medvid`` (its version as model name); a signed report adds the
  reviewer as person observer;
- CONTAINS CONTAINER (DCM 121070 "Findings") → one TEXT per report section (``99MEDVID`` code, meaning = the
  section name);
- CONTAINS CONTAINER per measurement section (its finding-site code from ``configs/sr_measurements.yaml``
  ``report.sections``, else a ``99MEDVID`` code) → one NUM per **measured** value (vendor measurement SRs read at
  ingest), with its concept, UCUM unit, Measurement Method and Derivation modifiers and, when the image is known,
  INFERRED FROM the image it was measured on;
- CONTAINS CONTAINER (``99MEDVID`` "Estimates by medvid (not measured)") → one NUM per numeric phenotype medvid
  **estimated** by retrieval (``report.estimates``: LOINC concept and UCUM unit), each with HAS CONCEPT MOD
  Derivation = ``99MEDVID`` "Estimated from similar studies (not measured)". An estimate is never written as a
  measurement, whatever the verification state;
- CONTAINS TEXT (DCM 121106 "Comment"), when given.

Values are rounded to clinical precision per UCUM unit (``report.precision``: EF to a whole percent, lengths to
a millimetre). Without a :class:`Signature` the document is ``PARTIAL`` / ``UNVERIFIED`` / ``PRELIMINARY``; with
one it is ``COMPLETE`` / ``VERIFIED`` / ``FINAL``, VerifyingObserverSequence naming the reviewer at the time of
sign-off. Without an :class:`Identity` the patient and study attributes are empty and the StudyInstanceUID is a
pseudonym of the study key (what ``medvid draft`` and the app write into shareable folders); with one (only at send
time, ``medvid.pacs.push``) the SR carries the study's own identifiers, references the loops the draft used in
CurrentRequestedProcedureEvidenceSequence and, when it replaces an earlier sent version, that one in
PredecessorDocumentsSequence. Text is UTF-8 (SpecificCharacterSet ``ISO_IR 192``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import highdicom as hd
import yaml
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import medvid
from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.utils import atomic_path

PRIVATE_SCHEME = "99MEDVID"
UTF8 = "ISO_IR 192"  # SpecificCharacterSet: report text is Unicode ("LVEF ≥ 55 %", names with accents, CJK)
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
_REPORT = hd.sr.CodedConcept("125200", "DCM", "Adult Echocardiography Procedure Report")
_FINDINGS = hd.sr.CodedConcept("121070", "DCM", "Findings")
_LANGUAGE = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
_METHOD = hd.sr.CodedConcept("370129005", "SCT", "Measurement Method")
_DERIVATION = hd.sr.CodedConcept("121401", "DCM", "Derivation")
_ESTIMATE_DERIVATION = hd.sr.CodedConcept("MVEST01", PRIVATE_SCHEME, "Estimated from similar studies (not measured)")
_ESTIMATES = hd.sr.CodedConcept("MVEST00", PRIVATE_SCHEME, "Estimates by medvid (not measured)")
_SOURCE_IMAGE = hd.sr.CodedConcept("121112", "DCM", "Source of Measurement")
_US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
_PATIENT_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                  "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class Measured:
    """One measured value (a ``measurements.csv`` row of a vendor SR): concept ``SCHEME:VALUE``, UCUM unit."""

    concept_code: str
    concept_meaning: str
    value: float
    unit: str
    method_code: str = ""
    method_meaning: str = ""
    derivation: str = ""
    section: str = ""
    image_key: str = ""


@dataclass(frozen=True)
class Signature:
    """Who signed the report off and when (ISO 8601, from the review record)."""

    reviewer: str
    time: str


@dataclass(frozen=True)
class Identity:
    """A study's own identifiers (DICOM keyword → value) and its loops' UIDs (``video_key`` → SOPClassUID,
    SOPInstanceUID, SeriesInstanceUID): ``IngestFolder.identities()``, read from the private key folder."""

    study: Mapping[str, str]
    instances: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """An SR already in the PACS (the version a new one replaces)."""

    study_uid: str
    series_uid: str
    sop_uid: str


@lru_cache(maxsize=1)
def report_codes() -> dict[str, Any]:
    """The ``report:`` block of the shipped ``configs/sr_measurements.yaml`` (estimate concepts, precision,
    section codes)."""
    data = yaml.safe_load((config_dir() / "sr_measurements.yaml").read_text(encoding="utf-8")) or {}
    return data.get("report") or {}


def clinical_round(value: float, unit: str) -> float:
    """``value`` rounded to the clinical precision of its UCUM unit (2 decimals for units not listed)."""
    return round(float(value), int(report_codes().get("precision", {}).get(unit, 2)))


def private_code(name: str) -> hd.sr.CodedConcept:
    """A ``99MEDVID`` concept for a section or phenotype name (code value from its hash, meaning = name)."""
    value = "MV" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, name[:64])


def pseudonymous_study_uid(study_key: str) -> str:
    """A StudyInstanceUID derived deterministically from the study's pseudonymous key."""
    return generate_uid(entropy_srcs=["medvid-study", study_key])


def sr_series_uid(study_uid: str) -> str:
    """The one series medvid's SRs of a study go in (a series of their own, never one of the loops')."""
    return generate_uid(entropy_srcs=["medvid-sr-series", study_uid])


def build_report_sr(sections: Mapping[str, str], estimates: Mapping[str, float | None], *, study_key: str,
                    measured: Sequence[Measured] = (), signature: Signature | None = None,
                    identity: Identity | None = None, loops: Sequence[str] = (), predecessor: Reference | None = None,
                    comment: str = "", sop_instance_uid: str = "") -> hd.sr.ComprehensiveSR:
    """The SR of a report: ``sections`` ({name: text}), medvid's numeric ``estimates`` ({phenotype: value}; ``None``
    left out), vendor ``measured`` values, an optional ``comment``; signed when ``signature`` is given; identified
    (with the ``loops`` it used as evidence and the ``predecessor`` it replaces) when ``identity`` is given.
    The SOP Instance UID is ``sop_instance_uid`` when given, else derived from the content (same content, same
    instance)."""
    if not study_key:
        raise MedvidError("build_report_sr: study_key is empty")
    texts = {name: " ".join(str(text).split()) for name, text in sections.items() if text and str(text).strip()}
    if not texts:
        raise MedvidError(f"study {study_key}: no section text to put in an SR")
    reviewer = _person_name(signature.reviewer) if signature else ""
    study = _study(study_key, identity)
    nums = {name: float(v) for name, v in estimates.items() if v is not None}
    digest = hashlib.sha256(json.dumps(
        [texts, nums, [m.__dict__ for m in measured], reviewer, signature.time if signature else "", comment,
         study.StudyInstanceUID, list(loops), predecessor.sop_uid if predecessor else ""],
        sort_keys=True, default=str).encode()).hexdigest()

    root = hd.sr.ContainerContentItem(name=_REPORT, template_id="5200")
    root.ContentSequence = [*hd.sr.LanguageOfContentItemAndDescendants(language=_LANGUAGE),
                            *_observer_context(reviewer), _text_container(texts)]
    root.ContentSequence.extend(_measured_containers(measured, identity))
    if nums:
        root.ContentSequence.append(_estimates_container(nums))
    if comment:
        root.ContentSequence.append(hd.sr.TextContentItem(name=codes.DCM.Comment, value=comment,
                                                          relationship_type="CONTAINS"))
    final = signature is not None
    evidence = _evidence(study, identity, [*loops, *(m.image_key for m in measured)])
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence or [study], content=root,
        series_instance_uid=sr_series_uid(study.StudyInstanceUID),
        series_number=900,
        sop_instance_uid=sop_instance_uid or generate_uid(entropy_srcs=["medvid-sr", study_key, digest]),
        instance_number=1, manufacturer="medvid", is_complete=final, is_final=final, is_verified=final,
        verifying_observer_name=reviewer or None, verifying_organization="medvid review" if final else None,
        previous_versions=[_reference_dataset(predecessor, study)] if predecessor else None,
        series_description="medvid echo report" + ("" if final else " DRAFT"), specific_character_set=UTF8)
    if not evidence and "CurrentRequestedProcedureEvidenceSequence" in sr:  # the study stub is no real instance
        del sr.CurrentRequestedProcedureEvidenceSequence
    if signature is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = _dicom_datetime(signature.time)
    scheme = Dataset()  # the private codes' scheme, declared as PS3.3 C.12.1.1.3.1 asks for local schemes
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = PRIVATE_SCHEME, "medvid local codes"
    scheme.CodingSchemeResponsibleOrganization = "medvid"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_report_sr(path: str | os.PathLike, sections: Mapping[str, str], estimates: Mapping[str, float | None], *,
                    study_key: str, signature: Signature | None = None, comment: str = "",
                    measured: Sequence[Measured] = (), identity: Identity | None = None) -> Path:
    """:func:`build_report_sr` written atomically to ``path`` (pseudonymous unless ``identity`` is given: only
    ``medvid draft keep_identifiers=true`` passes the study UID, at the user's explicit request)."""
    sr = build_report_sr(sections, estimates, study_key=study_key, measured=measured, signature=signature,
                         comment=comment, identity=identity)
    path = Path(path)
    with atomic_path(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


def read_report_sr(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, float]]:
    """Sections and medvid's estimates ({phenotype: value}) back from an SR that :func:`build_report_sr` made."""
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise MedvidError(f"{path}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from exc
    by_code = {spec["code"]: name for name, spec in report_codes().get("estimates", {}).items()}
    sections: dict[str, str] = {}
    estimates: dict[str, float] = {}
    for item in sr.ContentSequence:
        if item.ValueType != "CONTAINER":
            continue
        for child in getattr(item, "ContentSequence", []):
            if item.name == _FINDINGS and child.ValueType == "TEXT":
                sections[child.name.meaning] = child.value
            elif item.name == _ESTIMATES and child.ValueType == "NUM":
                code = f"{child.name.scheme_designator}:{child.name.value}"
                estimates[by_code.get(code, child.name.meaning)] = float(child.value)
    return sections, estimates


def measured_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[Measured]:
    """:class:`Measured` values from a study's current ``measurements.csv`` rows (``replaced`` ones left out)."""
    out = []
    for r in rows:
        if str(r.get("replaced", "")).lower() in ("true", "1") or not str(r.get("concept_code") or ""):
            continue
        text = {k: "" if r.get(k) is None or str(r.get(k)) == "nan" else str(r.get(k))
                for k in ("concept_meaning", "unit", "method_code", "method_meaning", "derivation", "section",
                          "image_key")}
        out.append(Measured(concept_code=str(r["concept_code"]), value=float(r["value"]), **text))
    return out


# ------------------------------------------------------------------------------------------------ content
def _text_container(texts: Mapping[str, str]) -> hd.sr.ContainerContentItem:
    findings = hd.sr.ContainerContentItem(name=_FINDINGS, relationship_type="CONTAINS")
    findings.ContentSequence = [hd.sr.TextContentItem(name=private_code(name), value=text, relationship_type="CONTAINS")
                                for name, text in texts.items()]
    return findings


def _concept(code: str, meaning: str) -> hd.sr.CodedConcept:
    """``SCHEME:VALUE`` + meaning as a coded concept (meanings longer than DICOM's 64 characters are cut)."""
    scheme, _, value = code.partition(":")
    if not value:
        return private_code(meaning or code)
    return hd.sr.CodedConcept(value, scheme, (meaning or code)[:64])


def _unit(unit: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(unit or "1", "UCUM", unit or "no units")


def _measured_containers(measured: Sequence[Measured], identity: Identity | None) -> list[hd.sr.ContainerContentItem]:
    sections = report_codes().get("sections", {})
    by_section: dict[str, list[Measured]] = {}
    for m in measured:
        by_section.setdefault(m.section or "Measurements", []).append(m)
    containers = []
    for name, items in by_section.items():
        spec = sections.get(name)
        container = hd.sr.ContainerContentItem(
            name=_concept(spec["code"], spec["meaning"]) if spec else private_code(name), relationship_type="CONTAINS")
        container.ContentSequence = [_measured_num(m, identity) for m in items]
        containers.append(container)
    return containers


def _measured_num(m: Measured, identity: Identity | None) -> hd.sr.NumContentItem:
    num = hd.sr.NumContentItem(name=_concept(m.concept_code, m.concept_meaning), value=clinical_round(m.value, m.unit),
                               unit=_unit(m.unit), relationship_type="CONTAINS")
    children: list[Any] = []
    if m.method_code:
        children.append(hd.sr.CodeContentItem(name=_METHOD, value=_concept(m.method_code, m.method_meaning),
                                              relationship_type="HAS CONCEPT MOD"))
    if m.derivation:
        children.append(hd.sr.CodeContentItem(name=_DERIVATION, value=private_code(m.derivation),
                                              relationship_type="HAS CONCEPT MOD"))
    if image := _instance_uids(identity, m.image_key):
        children.append(hd.sr.ImageContentItem(name=_SOURCE_IMAGE, referenced_sop_class_uid=image["SOPClassUID"],
                                               referenced_sop_instance_uid=image["SOPInstanceUID"],
                                               relationship_type="INFERRED FROM"))
    if children:
        num.ContentSequence = children
    return num


def _estimates_container(estimates: Mapping[str, float]) -> hd.sr.ContainerContentItem:
    specs = report_codes().get("estimates", {})
    container = hd.sr.ContainerContentItem(name=_ESTIMATES, relationship_type="CONTAINS")
    items = []
    for name, value in estimates.items():
        spec = specs.get(name)
        unit = spec["unit"] if spec else "1"
        num = hd.sr.NumContentItem(name=_concept(spec["code"], spec["meaning"]) if spec else private_code(name),
                                   value=clinical_round(value, unit), unit=_unit(unit), relationship_type="CONTAINS")
        num.ContentSequence = [hd.sr.CodeContentItem(name=_DERIVATION, value=_ESTIMATE_DERIVATION,
                                                     relationship_type="HAS CONCEPT MOD")]
        items.append(num)
    container.ContentSequence = items
    return container


def _observer_context(reviewer: str) -> list:
    """The device observer medvid (and version); a signed report adds its reviewer as a person observer."""
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["medvid-device"]), name="medvid", manufacturer_name="medvid",
            model_name=f"medvid {medvid.__version__}"))
    if not reviewer:
        return list(device)
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=reviewer))
    return [*device, *person]


def _person_name(name: str) -> str:
    """A name typed as free text is one DICOM PN component (``"Jane Doe"`` → ``"Jane Doe^"``)."""
    name = " ".join(str(name).split())
    if not name:
        raise MedvidError("a signed report needs the reviewer's name")
    return name if "^" in name else f"{name}^"


def _dicom_datetime(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y%m%d%H%M%S%z")
    except ValueError as exc:
        raise MedvidError(f"sign-off time {iso!r} is not an ISO 8601 date-time") from exc


# ------------------------------------------------------------------------------------------------ study
def _study(study_key: str, identity: Identity | None) -> Dataset:
    """Study-level attributes highdicom copies into the SR: the study's own (``identity``) or a pseudonymous study
    UID with every patient and study attribute empty."""
    ds = Dataset()
    ds.SOPClassUID = _US_MULTIFRAME
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["medvid-stub", study_key])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["medvid-stub-series", study_key])
    known = dict(identity.study) if identity else {}
    if identity is not None and not known.get("StudyInstanceUID"):
        raise MedvidError(f"study {study_key}: its identity has no StudyInstanceUID")
    ds.StudyInstanceUID = known.get("StudyInstanceUID") or pseudonymous_study_uid(study_key)
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, known.get(keyword, ""))
    return ds


def _evidence(study: Dataset, identity: Identity | None, keys: Sequence[str]) -> list[Dataset]:
    """One dataset per known loop or still of ``keys`` (the study's attributes and the instance's UIDs): what
    highdicom lists in CurrentRequestedProcedureEvidenceSequence."""
    out = []
    for key in dict.fromkeys(keys):
        if uids := _instance_uids(identity, key):
            ds = copy.deepcopy(study)  # a shallow copy would share (and overwrite) the study's data elements
            ds.SOPClassUID, ds.SOPInstanceUID = uids["SOPClassUID"], uids["SOPInstanceUID"]
            ds.SeriesInstanceUID = uids["SeriesInstanceUID"]
            out.append(ds)
    return out


def _instance_uids(identity: Identity | None, key: str) -> Mapping[str, str] | None:
    """The UIDs of a loop or still by key, when all three are known (what evidence and image links need)."""
    uids = (identity.instances.get(key) if identity is not None and key else None) or {}
    return uids if all(uids.get(k) for k in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")) else None


def _reference_dataset(ref: Reference, study: Dataset) -> Dataset:
    """An earlier SR as highdicom's ``previous_versions`` expects it (same study; patient copied)."""
    ds = Dataset()
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, study.get(keyword, ""))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.study_uid, ref.series_uid
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, ref.sop_uid
    return ds


__all__ = ["Identity", "Measured", "PRIVATE_SCHEME", "Reference", "Signature", "build_report_sr", "clinical_round",
           "measured_from_rows", "private_code", "pseudonymous_study_uid", "read_report_sr", "report_codes",
           "sr_series_uid", "write_report_sr"]
