"""The SR shipped in docs/examples (a signed report as ``medvid pacs push`` sends it, synthetic identity) is what
``medvid.report.sr`` builds today and ``dciodvfy`` finds no error in it. Regenerate both files after a deliberate
change to the SR: ``python tests/test_pacs_docs.py``."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
SR_FILE, DCIODVFY_FILE = EXAMPLES / "sent_report.sr.dcm", EXAMPLES / "sent_report.dciodvfy.txt"
# Attributes that change at every build (creation time), not part of what the example shows; also each
# ContributingEquipmentSequence item's ContributionDateTime.
_VOLATILE = ("ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime")


def sent_report():
    """A signed, amended report of a synthetic study as `medvid pacs push` builds it: vendor LVEF (measured),
    medvid's kNN EF (estimated), the loops as evidence, the earlier version as predecessor."""
    from medvid.report.sr import Identity, Measured, Reference, Signature, build_report_sr, sr_series_uid

    root = "1.2.826.0.1.3680043.8.498.10"
    study = {"StudyInstanceUID": f"{root}.1", "PatientID": "SYNTH-0001", "PatientName": "Synthetic^Patient",
             "PatientBirthDate": "19600102", "PatientSex": "F", "AccessionNumber": "SYNACC0001",
             "ReferringPhysicianName": "Referring^Doctor", "StudyID": "1", "StudyDate": "20240105",
             "StudyTime": "101500"}
    loops = {f"vi_{n:016x}": {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.3.1", "SOPInstanceUID": f"{root}.1.2.{n}",
                              "SeriesInstanceUID": f"{root}.1.2"} for n in (1, 2, 3)}
    measured = [Measured("LN:18043-0", "Left Ventricular Ejection Fraction", 61.8351667551843, "%", "DCM:125207",
                         "Method of Disks, Biplane", section="Left Ventricle", image_key="vi_0000000000000001")]
    return build_report_sr(
        {"Left Ventricle": "Normal left ventricular size and systolic function.",
         "Mitral Valve": "Mild mitral regurgitation."}, {"ef": 58.4}, study_key="st_0123456789abcdef",
        measured=measured, signature=Signature("Ann Reviewer", "2024-01-05T11:30:00+00:00"),
        identity=Identity(study, loops), loops=list(loops),
        predecessor=Reference(study["StudyInstanceUID"], sr_series_uid(study["StudyInstanceUID"]), f"{root}.9.1"))


def _stable(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in _VOLATILE:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):  # highdicom's own entry, stamped with the time
        item.pop("ContributionDateTime", None)
    return ds


def test_the_shipped_example_is_what_the_sr_module_builds_today(tmp_path):
    built = tmp_path / "built.dcm"
    sent_report().save_as(built, enforce_file_format=True)
    shipped, today = _stable(pydicom.dcmread(SR_FILE)), _stable(pydicom.dcmread(built))
    assert shipped == today, "regenerate: python tests/test_pacs_docs.py"


def test_dciodvfy_finds_no_error_in_the_shipped_example():
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(SR_FILE)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "ComprehensiveSR" in output and not [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert DCIODVFY_FILE.read_text().split("\n", 2)[2].strip() == output.strip()  # the docs show today's output


if __name__ == "__main__":
    sent_report().save_as(SR_FILE, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(SR_FILE)], capture_output=True, text=True, timeout=60)
    DCIODVFY_FILE.write_text("# dciodvfy (Debian dicom3tools) on docs/examples/sent_report.sr.dcm (tests/test_pacs_docs.py)\n"
                             "$ dciodvfy docs/examples/sent_report.sr.dcm\n" + out.stdout + out.stderr)
    print(f"wrote {SR_FILE} and {DCIODVFY_FILE}")
