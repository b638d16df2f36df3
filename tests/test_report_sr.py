"""DICOM SR of a report (TID 5200 after highdicom): content, verification, identity only when asked, and a
validator (dicom3tools' ``dciodvfy``) that finds no error in it."""
from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import pytest
from pydicom import dcmread

from medvid.errors import MedvidError
from medvid.report.sr import (PRIVATE_SCHEME, Identity, Measured, Reference, Signature, build_report_sr,
                              measured_from_rows, pseudonymous_study_uid, read_report_sr, write_report_sr)

SECTIONS = {"Left Ventricle": "The left ventricle is normal in size. LVEF 60%.",
            "Mitral Valve": "Moderate mitral regurgitation.",
            "Pericardium": "No pericardial effusion. Compared with the prior study of [DATE], unchanged."}
ESTIMATES = {"ef": 61.8351667551843, "reduced_ef": 0.12, "pa_pressure": None}
LOOP = {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.3.1", "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.11",
        "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.10"}
IDENTITY = Identity({"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1", "PatientID": "PID-1", "PatientName": "Doe^Jane",
                     "PatientBirthDate": "19600101", "PatientSex": "F", "AccessionNumber": "ACC1",
                     "ReferringPhysicianName": "Ref^Rita", "StudyID": "1", "StudyDate": "20261201",
                     "StudyTime": "101010"}, {"vi_a": LOOP})
BIPLANE = Measured("LN:18043-0", "Left Ventricular Ejection Fraction", 58.04, "%", "DCM:125207",
                   "Method of disks, biplane", "", "Left Ventricle", "vi_a")
LVIDD = Measured("LN:29436-3", "Left Ventricular Internal Diastolic Dimension", 4.8649, "cm", section="Left Ventricle")


def _children(sr, meaning):
    return next(i for i in sr.ContentSequence if i.name.meaning == meaning).ContentSequence


def test_draft_is_pseudonymous_and_keeps_estimates_apart_from_measurements(tmp_path):
    path = write_report_sr(tmp_path / "st_1.sr.dcm", SECTIONS, ESTIMATES, study_key="st_0123456789abcdef",
                           measured=[LVIDD])
    assert [p.name for p in tmp_path.iterdir()] == ["st_1.sr.dcm"]  # atomic: no temporary left
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and ds.Modality == "SR"
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("PARTIAL", "UNVERIFIED", "PRELIMINARY")
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == "" and ds.AccessionNumber == ""
    assert ds.StudyInstanceUID == pseudonymous_study_uid("st_0123456789abcdef")
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds and "VerifyingObserverSequence" not in ds
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "5200"
    sr = hd.sr.srread(path)
    root = sr.ContentSequence
    language = next(i for i in root if i.name.value == "121049")  # Language of Content Item and Descendants
    assert language.value.value == "en-US"
    device = {i.name.meaning: i for i in root if i.relationship_type.value == "HAS OBS CONTEXT"}
    assert device["Device Observer Name"].value == "medvid"
    assert device["Device Observer Model Name"].value.startswith("medvid ")  # with its version
    texts = {i.name.meaning: i.value for i in _children(sr, "Findings")}
    assert texts == SECTIONS
    assert all(i.name.scheme_designator == PRIVATE_SCHEME for i in _children(sr, "Findings"))
    lv = _children(sr, "Left ventricle structure")  # the measured section, coded by its finding site
    assert [(i.name.value, float(i.value), i.unit.value) for i in lv] == [("29436-3", 4.9, "cm")]
    estimates = {i.name.meaning: i for i in _children(sr, "Estimates by medvid (not measured)")}
    ef = estimates["Left Ventricular Ejection Fraction"]
    assert (ef.name.value, ef.name.scheme_designator, float(ef.value), ef.unit.value) == ("18043-0", "LN", 62.0, "%")
    derivation = ef.ContentSequence[0]
    assert derivation.name.value == "121401" and "not measured" in derivation.value.meaning
    sections, back = read_report_sr(path)
    assert sections == SECTIONS and back == pytest.approx({"ef": 62.0, "reduced_ef": 0.12})


def test_signed_report_is_verified_by_its_reviewer_at_sign_off_time(tmp_path):
    sr = build_report_sr(SECTIONS, {"ef": 60}, study_key="st_1",
                         signature=Signature("Ann Reviewer", "2026-12-08T09:15:00+00:00"))
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Ann Reviewer^"
    assert observer.VerificationDateTime.startswith("20261208091500")
    people = [i for i in sr.ContentSequence if i.name.value == "121008"]  # Person Observer Name
    assert [str(p.value) for p in people] == ["Ann Reviewer^"]
    with pytest.raises(MedvidError, match="ISO 8601"):
        build_report_sr(SECTIONS, {}, study_key="st_1", signature=Signature("Ann", "yesterday"))


def test_identity_evidence_image_links_and_predecessor():
    sr = build_report_sr(SECTIONS, ESTIMATES, study_key="st_1", measured=[BIPLANE], identity=IDENTITY, loops=["vi_a"],
                         predecessor=Reference(IDENTITY.study["StudyInstanceUID"], "1.2.826.0.1.3680043.8.498.20",
                                               "1.2.826.0.1.3680043.8.498.21"),
                         signature=Signature("Ann Reviewer", "2026-12-08T09:15:00Z"))
    assert (sr.StudyInstanceUID, sr.PatientID, str(sr.PatientName), sr.AccessionNumber) == \
        ("1.2.826.0.1.3680043.8.498.1", "PID-1", "Doe^Jane", "ACC1")
    assert str(sr.ReferringPhysicianName) == "Ref^Rita" and sr.PatientBirthDate == "19600101"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    refs = evidence.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == LOOP["SeriesInstanceUID"]
    assert refs.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == LOOP["SOPInstanceUID"]
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.21"
    num = next(i for i in sr.ContentSequence if i.name.meaning == "Left ventricle structure").ContentSequence[0]
    modifiers = {c.name.meaning: c for c in num.ContentSequence}
    assert modifiers["Measurement Method"].value.value == "125207"
    assert modifiers["Source of Measurement"].referenced_sop_instance_uid == LOOP["SOPInstanceUID"]
    assert float(num.value) == 58.0  # EF to a whole percent


def test_deterministic_uids_and_clear_errors():
    a = build_report_sr(SECTIONS, ESTIMATES, study_key="st_a")
    b = build_report_sr(SECTIONS, ESTIMATES, study_key="st_a")
    c = build_report_sr(SECTIONS, ESTIMATES, study_key="st_b")
    assert a.StudyInstanceUID == b.StudyInstanceUID != c.StudyInstanceUID
    assert a.SOPInstanceUID == b.SOPInstanceUID  # same content, same instance: a resumed run rewrites it identically
    assert build_report_sr(SECTIONS, {"ef": 1.0}, study_key="st_a").SOPInstanceUID != a.SOPInstanceUID
    with pytest.raises(MedvidError, match="no section text"):
        build_report_sr({"Left Ventricle": "  "}, {}, study_key="st_a")
    with pytest.raises(MedvidError, match="study_key"):
        build_report_sr(SECTIONS, {}, study_key="")
    with pytest.raises(MedvidError, match="StudyInstanceUID"):
        build_report_sr(SECTIONS, {}, study_key="st_a", identity=Identity({"PatientID": "x"}))


def test_measured_rows_leave_out_replaced_ones():
    rows = [{"concept_code": "LN:29436-3", "concept_meaning": "LVIDd", "value": 4.8, "unit": "cm", "replaced": False,
             "method_code": float("nan"), "section": "Left Ventricle", "image_key": ""},
            {"concept_code": "LN:29436-3", "concept_meaning": "LVIDd", "value": 5.5, "unit": "cm", "replaced": True}]
    assert [(m.value, m.method_code) for m in measured_from_rows(rows)] == [(4.8, "")]


def test_unreadable_sr_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sr.dcm"
    bad.write_bytes(b"not dicom")
    with pytest.raises(MedvidError, match="not a readable DICOM SR"):
        read_report_sr(bad)


UNICODE_SECTIONS = {"Left Ventricle": "LVEF ≥ 55 %, GLS −18 %.", "Aorta": "Root 3.4 cm; Δ 0.2 cm, 15 µm/s.",
                    "Atrial Septum": "Ασθενής: κανονικό. 心房中隔正常。",
                    "Pericardium": "Vu par Dr Müller-Åström, señal ok."}


@pytest.mark.parametrize("signed", [False, True])
def test_non_latin_text_round_trips_as_utf8(tmp_path, signed):
    signature = Signature("Ångström^Zoë", "2026-12-08T09:15:00+01:00") if signed else None
    path = write_report_sr(tmp_path / "u.sr.dcm", UNICODE_SECTIONS, {"ef": 57.0}, study_key="st_u", signature=signature)
    ds = dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    sections, _ = read_report_sr(path)
    assert sections == UNICODE_SECTIONS
    if signed:
        assert str(ds.VerifyingObserverSequence[0].VerifyingObserverName) == "Ångström^Zoë"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed: .ci/run installs it")
@pytest.mark.parametrize("kind", ["draft", "sent"])
def test_dciodvfy_finds_no_error(tmp_path, kind):
    if kind == "draft":
        path = write_report_sr(tmp_path / "d.sr.dcm", SECTIONS, ESTIMATES, study_key="st_1", measured=[LVIDD])
    else:
        path = write_report_sr(tmp_path / "s.sr.dcm", SECTIONS, ESTIMATES, study_key="st_1", measured=[BIPLANE, LVIDD],
                               identity=IDENTITY, signature=Signature("Ann Reviewer", "2026-12-08T09:15:00Z"))
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = out.stdout + out.stderr
    assert "ComprehensiveSR" in report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
