"""DICOM Comprehensive SR export of a report: valid on a pydicom round trip and through highdicom's reader."""
from __future__ import annotations

import highdicom as hd
import pytest
from pydicom import dcmread

from medvid.errors import MedvidError
from medvid.report.sr import (EF_CODE, PRIVATE_SCHEME, build_report_sr, pseudonymous_study_uid, read_report_sr,
                              write_report_sr)

SECTIONS = {"Left Ventricle": "The left ventricle is normal in size. LVEF 60%.",
            "Mitral Valve": "Moderate mitral regurgitation.",
            "Pericardium": "No pericardial effusion. Compared with the prior study of [DATE], unchanged."}
MEASUREMENTS = {"ef": 58.4, "reduced_ef": 0.12, "pa_pressure": None}


def test_draft_round_trip(tmp_path):
    path = write_report_sr(tmp_path / "st_1.sr.dcm", SECTIONS, MEASUREMENTS, study_key="st_0123456789abcdef")
    assert [p.name for p in tmp_path.iterdir()] == ["st_1.sr.dcm"]  # atomic: no temporary left
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and ds.Modality == "SR"
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("PARTIAL", "UNVERIFIED", "PRELIMINARY")
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == "" and ds.AccessionNumber == ""
    assert ds.StudyInstanceUID == pseudonymous_study_uid("st_0123456789abcdef")
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    root = sr.ContentSequence
    findings = next(i for i in root if i.name.meaning == "Findings")
    texts = {i.name.meaning: i.value for i in findings.ContentSequence}
    assert texts == SECTIONS
    assert all(i.name.scheme_designator == PRIVATE_SCHEME and i.ValueType == "TEXT" for i in findings.ContentSequence)
    group = next(i for i in root if i.name.meaning == "Measurement Group")
    ef = next(i for i in group.ContentSequence if i.name == EF_CODE)
    assert ef.value == pytest.approx(58.4) and ef.unit.value == "%" and ef.unit.scheme_designator == "UCUM"
    assert ef.name.value == "10230-1" and ef.name.scheme_designator == "LN"
    sections, measurements = read_report_sr(path)
    assert sections == SECTIONS and measurements == pytest.approx({"ef": 58.4, "reduced_ef": 0.12})


def test_final_is_verified_and_keeps_a_given_study_uid(tmp_path):
    path = write_report_sr(tmp_path / "final.sr.dcm", SECTIONS, {"ef": 60}, study_key="st_1", final=True,
                           observer="Reviewer^Ann", study_instance_uid="1.2.826.0.1.3680043.8.498.1")
    ds = dcmread(path)
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    assert ds.VerifyingObserverSequence[0].VerifyingObserverName == "Reviewer^Ann"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert isinstance(hd.sr.srread(path), hd.sr.ComprehensiveSR)


def test_deterministic_uids_and_clear_errors():
    a = build_report_sr(SECTIONS, MEASUREMENTS, study_key="st_a")
    b = build_report_sr(SECTIONS, MEASUREMENTS, study_key="st_a")
    c = build_report_sr(SECTIONS, MEASUREMENTS, study_key="st_b")
    assert a.StudyInstanceUID == b.StudyInstanceUID != c.StudyInstanceUID
    assert a.SOPInstanceUID == b.SOPInstanceUID  # same content, same instance: a resumed run rewrites it identically
    assert build_report_sr(SECTIONS, {"ef": 1.0}, study_key="st_a").SOPInstanceUID != a.SOPInstanceUID
    with pytest.raises(MedvidError, match="no section text"):
        build_report_sr({"Left Ventricle": "  "}, {}, study_key="st_a")
    with pytest.raises(MedvidError, match="study_key"):
        build_report_sr(SECTIONS, {}, study_key="")


def test_unreadable_sr_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sr.dcm"
    bad.write_bytes(b"not dicom")
    with pytest.raises(MedvidError, match="not a readable DICOM SR"):
        read_report_sr(bad)


UNICODE_SECTIONS = {"Left Ventricle": "LVEF ≥ 55 %, GLS −18 %.", "Aorta": "Root 3.4 cm; Δ 0.2 cm, 15 µm/s.",
                    "Atrial Septum": "Ασθενής: κανονικό. 心房中隔正常。",
                    "Pericardium": "Vu par Dr Müller-Åström, señal ok."}


@pytest.mark.parametrize("final", [False, True])
def test_non_latin_text_round_trips_as_utf8(tmp_path, final):
    path = write_report_sr(tmp_path / "u.sr.dcm", UNICODE_SECTIONS, {"ef": 57.0}, study_key="st_u", final=final,
                           observer="Ångström^Zoë" if final else "medvid")
    ds = dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    sections, _ = read_report_sr(path)
    assert sections == UNICODE_SECTIONS
    if final:
        assert str(ds.VerifyingObserverSequence[0].VerifyingObserverName) == "Ångström^Zoë"
