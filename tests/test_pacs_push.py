"""`medvid pacs push` against a real PACS (Debian's Orthanc on loopback): signed-off reports filed as SRs under the
patient's own study, re-identified only at send time, sent once per version, amendments referencing what they
replace, and the faults (unreachable, a study the PACS does not hold, a study the key folder does not know)."""
from __future__ import annotations

import json
import shutil
import subprocess

import highdicom as hd
import pydicom
import pytest

from medvid.apps import store
from medvid.config import load_config
from medvid.errors import MedvidError
from medvid.pacs.address import Credentials, parse_address
from medvid.pacs.clients import PacsError, connect
from medvid.report import reviews
from orthanc_server import PASSWORD, USER, dicom_instances, orthanc_missing, start_orthanc

pytestmark = pytest.mark.skipif(orthanc_missing() is not None, reason=orthanc_missing() or "")

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic export in Orthanc, its ingest (with a vendor LVEF for the first study) and drafts of two studies
    plus one from other data, as `medvid draft` writes them (docs/drafting_contract.md)."""
    from app_testdata import write_drafts, write_measurements
    from echo_testdata import ingest_synth, make_synth

    base = tmp_path_factory.mktemp("push")
    make_synth(base / "synth")
    ingest_dir = base / "ingest"
    ingest_synth(base / "synth", ingest_dir, "salt=push-test")
    drafts = base / "drafts"
    states = write_drafts(ingest_dir, drafts)
    lines = [ln for ln in (drafts / "drafts.jsonl").read_text().splitlines() if ln.endswith("}")]
    (drafts / "drafts.jsonl").write_text("\n".join(lines) + "\n")  # as `medvid draft` assembles it: no torn line
    measured = write_measurements(ingest_dir, states["drafted"][0])
    server = start_orthanc(base / "orthanc")
    files = dicom_instances(base / "synth" / "dicom")
    assert server.upload(files) == len(files)
    yield {"ingest": ingest_dir, "drafts": drafts, "server": server, "measured": measured, **states,
           "dicom": {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID): p for p in files}}
    server.stop()



def _push(world, *overrides: str, url: str | None = None) -> dict:
    from medvid.pipelines import pacs as job

    secrets = world["ingest"].parent / "pacs.json"
    secrets.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    return job.run(load_config(job.Config, "pacs", None, [
        "action=push", f"url={url or world['server'].dicomweb}", f"drafts={world['drafts']}",
        f"ingest={world['ingest']}", f"credentials={secrets}", "progress=false", *overrides]))


def _sign(world, key: str, text: str, base_version: int, reason: str = "") -> dict:
    draft = store.read_drafts([world["drafts"]]).drafts[key]
    return reviews.save([world["drafts"]], draft, {"Left Ventricle": text}, "Ann Reviewer", sign_off=True,
                        base_version=base_version, reason=reason)


def _srs(world, study_uid: str) -> list[pydicom.Dataset]:
    pacs = connect(parse_address(world["server"].dicomweb), Credentials(USER, PASSWORD))
    return [pacs.fetch(ref) for ref in pacs.instances(study_uid) if ref.sop_class == SR_CLASS]


def _identity(world, key: str) -> dict:
    from medvid.io.ingest_folder import IngestFolder

    return IngestFolder(world["ingest"]).identities()[key]


def test_signed_report_is_filed_under_the_patients_study_once_and_amendments_reference_it(world, tmp_path):
    key = world["drafted"][0]
    with pytest.raises(MedvidError, match="no signed-off report"):  # nothing signed yet: nothing to send
        _push(world)
    review = _sign(world, key, "Normal LV size; LVEF 55%.", 0)
    ours = [world["drafts"], world["ingest"]]
    before = sorted(p for d in ours for p in d.rglob("*") if p.is_file())
    summary = _push(world)
    assert (summary["sent"], summary["sent_verified"], summary["first_send"], summary["errors"]) == (1, 1, 1, 0)
    assert summary["not_signed_off"] == 2  # the other drafted study and the one drafted from other data
    after = sorted(p for d in ours for p in d.rglob("*") if p.is_file())
    assert [p for p in after if p not in before] == [world["drafts"] / "pacs_sent.jsonl"]  # no identified file
    sent_log = (world["drafts"] / "pacs_sent.jsonl").read_text()
    identity = _identity(world, key)
    assert identity["study"]["PatientID"] not in sent_log and identity["study"]["StudyInstanceUID"] not in sent_log

    study_uid = identity["study"]["StudyInstanceUID"]
    (sr,) = _srs(world, study_uid)
    original = pydicom.dcmread(world["dicom"][study_uid], stop_before_pixels=True)
    assert (sr.StudyInstanceUID, sr.PatientID, str(sr.PatientName), sr.AccessionNumber, sr.PatientBirthDate) == \
        (original.StudyInstanceUID, original.PatientID, str(original.PatientName), original.AccessionNumber,
         original.PatientBirthDate)
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("VERIFIED", "COMPLETE")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Ann Reviewer^"
    assert sr.VerifyingObserverSequence[0].VerificationDateTime.startswith(
        review["time"][:19].replace("-", "").replace("T", "").replace(":", ""))
    loops = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
             for r in s.ReferencedSOPSequence}
    assert loops and loops <= {v["SOPInstanceUID"] for v in identity["instances"].values()}
    path = tmp_path / "sent.sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    parsed = hd.sr.srread(path)
    lv = next(i for i in parsed.ContentSequence if i.name.meaning == "Left ventricle structure").ContentSequence
    assert [(i.name.value, float(i.value)) for i in lv][0] == ("18043-0", 62.0)  # the vendor's measurement
    assert any(i.name.meaning == "Estimates by medvid (not measured)" for i in parsed.ContentSequence)
    if shutil.which("dciodvfy"):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        assert not [ln for ln in (report.stdout + report.stderr).splitlines() if ln.startswith("Error")]

    again = _push(world)  # idempotent: the same version is not sent twice
    assert (again["sent"], again["already_sent"]) == (0, 1) and len(_srs(world, study_uid)) == 1

    _sign(world, key, "Normal LV size; LVEF 57%.", review["version"], reason="EF re-measured")
    amended = _push(world)
    assert (amended["sent"], amended["amended"]) == (1, 1)
    srs = {s.SOPInstanceUID: s for s in _srs(world, study_uid)}
    assert len(srs) == 2
    new = next(s for s in srs.values() if "PredecessorDocumentsSequence" in s)
    replaced = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert replaced.ReferencedSOPInstanceUID == sr.SOPInstanceUID and new.SOPInstanceUID != sr.SOPInstanceUID


def test_unverified_drafts_go_only_when_asked_and_unknown_studies_are_counted(world):
    key, foreign = world["drafted"][1], world["foreign"]
    summary = _push(world, "include_unverified=true")
    assert summary["sent_unverified"] >= 1 and summary["errors_by_reason"] == {"no_identity": 1}
    assert [e["study_key"] for e in summary["error_studies"]] == [foreign]
    study_uid = _identity(world, key)["study"]["StudyInstanceUID"]
    (sr,) = _srs(world, study_uid)
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("UNVERIFIED", "PARTIAL")

    keys = world["ingest"] / "LOCAL_KEYS_DO_NOT_SHARE" / "identities.jsonl"
    rows = [json.loads(line) for line in keys.read_text().splitlines()]
    saved = keys.read_text()
    try:  # a study the PACS does not hold (deleted there, or another archive's): counted, the batch goes on
        for row in rows:
            if row["study_key"] == world["drafted"][1]:
                row["study"]["StudyInstanceUID"] = "1.2.826.0.1.3680043.8.498.999999"
        keys.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (world["drafts"] / "pacs_sent.jsonl").unlink()
        again = _push(world, "include_unverified=true")
        assert again["errors_by_reason"] == {"unknown_study": 1, "no_identity": 1} and again["sent"] >= 1
    finally:
        keys.write_text(saved)


def test_dimse_push_and_an_unreachable_pacs(world, tmp_path):
    from orthanc_server import free_port

    with pytest.raises(PacsError, match="not reachable") as info:
        _push(world, "include_unverified=true", url=f"http://127.0.0.1:{free_port()}/dicom-web")
    assert info.value.reason == "unreachable"
    log = world["drafts"] / "pacs_sent.jsonl"
    before = log.read_text() if log.exists() else ""
    summary = _push(world, "include_unverified=true", url=world["server"].dimse)  # C-STORE; another destination
    assert summary["sent"] >= 1 and log.read_text() != before
    with pytest.raises(MedvidError, match="identities.jsonl"):
        _push(world, f"keys_dir={tmp_path / 'no-keys'}")
