"""`medvid pacs pull` against a real PACS: Debian's Orthanc on loopback (DICOMweb and DIMSE), plus the faults a
hospital network has (unreachable, wrong credentials, a dropped connection, a study deleted between runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medvid.config import load_config
from medvid.errors import MedvidError
from medvid.pacs.address import Credentials, load_credentials, parse_address
from medvid.pacs.clients import InstanceRef, PacsError
from medvid.pacs.pull import pull, study_queries
from orthanc_server import PASSWORD, USER, dicom_instances, orthanc_missing, start_orthanc

pytestmark = pytest.mark.skipif(orthanc_missing() is not None, reason=orthanc_missing() or "")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from echo_testdata import make_synth

    root = tmp_path_factory.mktemp("synth")
    make_synth(root)
    return root / "dicom"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, export):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    files = dicom_instances(export)
    assert server.upload(files) == len(files)
    yield server
    server.stop()



@pytest.fixture()
def secrets(tmp_path):
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    return path


def _run(*overrides: str) -> dict:
    from medvid.pipelines import pacs as job

    return job.run(load_config(job.Config, "pacs", None, ["progress=false", *overrides]))


def _loops(ingest_dir: Path) -> list[tuple]:
    videos = pd.read_parquet(ingest_dir / "videos.parquet")
    return sorted(videos[["study_key", "instance_key", "frames", "rows", "cols", "transfer_syntax"]]
                  .itertuples(index=False, name=None))


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_pull_then_ingest_gives_the_loops_of_the_folder_and_resumes(orthanc, export, secrets, tmp_path, protocol):
    from echo_testdata import ingest

    url = orthanc.dicomweb if protocol == "dicomweb" else orthanc.dimse
    out = tmp_path / "pulled"
    summary = _run(f"url={url}", f"out={out}", f"credentials={secrets}", "modality=US")
    files = [p for p in out.rglob("*.dcm")]
    assert summary["fetched"] == len(files) == summary["instances"] > 0 and summary["failed"] == {}
    assert _loops(Path(ingest(out, tmp_path / "ing_pulled", "salt=s")["out"])) == \
        _loops(Path(ingest(export, tmp_path / "ing_folder", "salt=s")["out"]))
    again = _run(f"url={url}", f"out={out}", f"credentials={secrets}")
    assert again["fetched"] == 0 and again["already_present"] == summary["instances"]
    text = json.dumps(summary) + json.dumps(again)
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
    assert not any(u in text for u in uids)  # counts only


def test_accession_list_from_a_file_selects_studies(orthanc, export, secrets, tmp_path):
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_instances(export)]
    first = next(h for h in headers if h.get("AccessionNumber"))
    (tmp_path / "acc.txt").write_text(f"# tonight's list\n{first.AccessionNumber}\n")
    summary = _run(f"url={orthanc.dicomweb}", f"out={tmp_path / 'one'}", f"credentials={secrets}",
                   f"accessions={tmp_path / 'acc.txt'}")
    assert summary["studies"] == 1
    pulled = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
              for p in (tmp_path / "one").rglob("*.dcm")}
    assert pulled == {str(first.StudyInstanceUID)}


def test_unreachable_and_wrong_credentials_are_one_clear_line_and_write_nothing(orthanc, secrets, tmp_path):
    from orthanc_server import free_port

    out = tmp_path / "never"
    with pytest.raises(PacsError, match="not reachable") as info:
        _run(f"url=http://127.0.0.1:{free_port()}/dicom-web", f"out={out}", f"credentials={secrets}")
    assert info.value.reason == "unreachable" and not out.exists()
    with pytest.raises(PacsError, match="not reachable|rejected"):
        _run(f"url=dimse://NOBODY@127.0.0.1:{free_port()}", f"out={out}")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"username": USER, "password": "not-it"}))
    with pytest.raises(PacsError, match="refused the credentials"):
        _run(f"url={orthanc.dicomweb}", f"out={out}", f"credentials={wrong}")
    assert not out.exists()
    cli = subprocess.run([sys.executable, "-m", "medvid.cli", "pacs", "pull", f"http://127.0.0.1:{free_port()}/x",
                          "--out", str(out), f"credentials={secrets}", "progress=false"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode != 0 and cli.stdout == "" and "not reachable" in cli.stderr
    assert PASSWORD not in cli.stderr and not out.exists()


def test_a_study_deleted_between_runs_is_counted_not_fatal(orthanc, export, secrets, tmp_path):
    from orthanc_server import start_orthanc

    server = start_orthanc(tmp_path / "second")
    try:
        files = dicom_instances(export)
        server.upload(files)
        studies = server.rest("/studies")
        pacs = _client(server.dicomweb)
        queries = study_queries(modality="US")
        found = pacs.find_studies(queries[0])
        server.rest(f"/studies/{studies[0]}", method="DELETE")  # gone between the query and the retrieval

        class Stale:  # answers the query from before the deletion
            def find_studies(self, query):
                return found

            def __getattr__(self, name):
                return getattr(pacs, name)

        summary = pull(Stale(), queries, tmp_path / "out", "test", progress=False)
        assert summary["failed"] == {"study_gone": 1} and summary["studies"] == len(found)
        assert summary["fetched"] == summary["instances"] > 0
    finally:
        server.stop()


def _client(url: str):
    from medvid.pacs.clients import connect

    return connect(parse_address(url), Credentials(USER, PASSWORD))


def test_a_dropped_connection_stops_with_a_rerun_hint_and_the_rerun_completes(orthanc, tmp_path):
    real = _client(orthanc.dicomweb)

    class Dropping:
        calls = 0

        def find_studies(self, query):
            return real.find_studies(query)

        def instances(self, study):
            return real.instances(study)

        def fetch(self, ref):
            Dropping.calls += 1
            if Dropping.calls > 3:
                raise PacsError("unreachable", "PACS not reachable (connection reset)")
            return real.fetch(ref)

    out = tmp_path / "out"
    with pytest.raises(PacsError, match="rerun to continue"):
        pull(Dropping(), study_queries(modality="US"), out, "test", workers=1, progress=False)
    assert not list(out.rglob(".*.tmp"))  # no partial file
    partial = len(list(out.rglob("*.dcm")))
    done = pull(real, study_queries(modality="US"), out, "test", progress=False)
    assert done["already_present"] == partial and done["fetched"] + partial == done["instances"]


def test_hostile_uids_and_foreign_folders_are_refused(tmp_path):
    class Hostile:
        def find_studies(self, query):
            return ["1.2.3"]

        def instances(self, study):
            return [InstanceRef("1.2.3", "..", "../../escape"), InstanceRef("1.2.3", "1.2.3.4", "x" * 70)]

        def fetch(self, ref):
            raise AssertionError("never fetched")

    summary = pull(Hostile(), [{}], tmp_path / "out", "test", progress=False)
    assert summary["failed"] == {"bad_uid": 2} and not (tmp_path / "escape.dcm").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(MedvidError, match="notes.txt"):
        pull(Hostile(), [{}], mine, "test", progress=False)
    assert (mine / "notes.txt").read_text() == "keep"


def test_addresses_and_credentials_never_come_from_argv():
    assert parse_address("https://pacs.example/dicom-web").kind == "dicomweb"
    dimse = parse_address("dimse://ORTHANC@10.0.0.5:4242")
    assert (dimse.kind, dimse.called_aet, dimse.host, dimse.port) == ("dimse", "ORTHANC", "10.0.0.5", 4242)
    with pytest.raises(MedvidError, match="not in the URL"):
        parse_address("https://user:pw@pacs.example/dicom-web")
    with pytest.raises(MedvidError, match="dimse://AET@host:port"):
        parse_address("dimse://pacs.example:104")
    creds = load_credentials(environ={"MEDVID_PACS_TOKEN": "t0ken"})
    assert creds.token == "t0ken" and "t0ken" not in repr(creds)
    with pytest.raises(MedvidError, match="YYYYMMDD"):
        study_queries(study_date="last week")
