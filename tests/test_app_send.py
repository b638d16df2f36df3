"""The review app's Send to PACS page under Streamlit's AppTest, against a real PACS (Debian's Orthanc): the
destination, each study's send status, and the action that files signed reports (``medvid.pacs.push``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvid.apps import access, store
from medvid.pacs.address import Credentials, parse_address
from medvid.pacs.clients import connect
from medvid.report import reviews
from orthanc_server import PASSWORD, USER, dicom_instances, orthanc_missing, start_orthanc

pytestmark = pytest.mark.skipif(orthanc_missing() is not None, reason=orthanc_missing() or "")

APPS = Path(__file__).resolve().parents[1] / "apps"
PAGE = "pages/4_Send_to_PACS.py"
TOKEN = "test-launch-token"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic export in Orthanc, its ingest and drafts (two studies + one from other data) under one data root."""
    from app_testdata import write_drafts
    from echo_testdata import ingest_synth, make_synth

    base = tmp_path_factory.mktemp("send")
    make_synth(base / "synth")
    ingest_synth(base / "synth", base / "ingest", "salt=send-test")
    states = write_drafts(base / "ingest", base / "drafts")
    lines = [ln for ln in (base / "drafts" / "drafts.jsonl").read_text().splitlines() if ln.endswith("}")]
    (base / "drafts" / "drafts.jsonl").write_text("\n".join(lines) + "\n")  # as `medvid draft` assembles it
    server = start_orthanc(base / "orthanc")
    files = dicom_instances(base / "synth" / "dicom")
    assert server.upload(files) == len(files)
    secrets = base / "pacs.json"
    secrets.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    yield {"base": base, "ingest": base / "ingest", "drafts": base / "drafts", "server": server, "secrets": secrets,
           **states}
    server.stop()



def _page(monkeypatch, world, pacs: bool = True):
    from streamlit.testing.v1 import AppTest

    cfg = store.AppConfig(data=(world["base"],), pacs_url=world["server"].dicomweb if pacs else "",
                          pacs_credentials=str(world["secrets"]) if pacs else "",
                          pacs_ingest=world["ingest"] if pacs else None)
    monkeypatch.setenv(store.ENV, cfg.to_json())
    monkeypatch.setenv(access.TOKEN_ENV, TOKEN)
    at = AppTest.from_file(str(APPS / "review_app.py"), default_timeout=120)
    at.switch_page(PAGE)
    at.query_params["token"] = TOKEN
    return at.run()


def _status(at) -> dict[str, str]:
    """Study key → PACS column of the page's status table (Markdown escapes undone)."""
    [df] = [t.value for t in at.get("table") if "PACS" in t.value.columns]
    return {k.replace("\\", ""): v.replace("\\", "") for k, v in zip(df["study"], df["PACS"])}


def _srs(world, study_uid: str) -> list:
    pacs = connect(parse_address(world["server"].dicomweb), Credentials(USER, PASSWORD))
    return [pacs.fetch(ref) for ref in pacs.instances(study_uid) if ref.sop_class == SR_CLASS]


def test_send_to_pacs_files_signed_reports_once_and_shows_each_study_status(world, monkeypatch):
    from medvid.io.ingest_folder import IngestFolder

    key, unsigned = world["drafted"]
    draft = store.read_drafts([world["drafts"]]).drafts[key]
    reviews.save([world["drafts"]], draft, {"Left Ventricle": "Normal LV size; LVEF 55%."}, "Ann Reviewer",
                 sign_off=True, base_version=0)
    at = _page(monkeypatch, world)
    assert not at.exception, [e.value for e in at.exception]
    assert any(world["server"].dicomweb in m.value.replace("\\", "") for m in at.markdown)  # the destination
    status = _status(at)
    assert status[key] == "to send (version 1)" and status[unsigned] == "not signed off"
    study_uid = IngestFolder(world["ingest"]).identities()[key]["study"]["StudyInstanceUID"]
    assert study_uid not in str([m.value for m in at.markdown]) + str(status)  # no identifier on the page
    send = f"send::{world['drafts'].resolve()}"
    at.button(key=send).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Sent 1 report(s); 0 already in the PACS" in s.value for s in at.success), [s.value for s in at.success]
    assert _status(at)[key].startswith("sent (version 1, ")
    (sr,) = _srs(world, study_uid)
    assert sr.VerificationFlag == "VERIFIED"
    at.button(key=send).click().run()  # again: nothing new is filed
    assert any("Sent 0 report(s); 1 already in the PACS" in s.value for s in at.success)
    assert len(_srs(world, study_uid)) == 1


def test_without_a_pacs_the_page_says_how_to_set_one_and_offers_no_send(world, monkeypatch):
    at = _page(monkeypatch, world, pacs=False)
    assert not at.exception and any("pacs_url=URL" in i.value for i in at.info)
    assert not [b for b in at.button if str(b.key).startswith("send::")]
    assert set(_status(at)) == {*world["drafted"], world["foreign"]}
