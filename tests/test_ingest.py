"""`medvid ingest` on a synthetic export: rows, re-keyed companion tables, no PHI anywhere, resume, CLI."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydicom import dcmread

from echo_testdata import ingest, ingest_synth, make_synth
from medvid.io.dicom import find_files
from medvid.io.ingest_folder import KEY_DIR, IngestFolder
from medvid.utils import pseudonym


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_synth(out)
    return out


@pytest.fixture(scope="module")
def ingested(synth, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ingest")
    return out, ingest_synth(synth, out, "salt=unit-test-salt")


def _phi_strings(synth: Path) -> set[str]:
    """Every identifier the fake export carries: patient tags, UIDs, folder names."""
    found: set[str] = set()
    root = synth / "dicom"
    for path in find_files(root):
        found.update(p for p in path.relative_to(root).parts[:-1])
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the non-DICOM file in the tree
            continue
        name = str(ds.PatientName)
        found.update({name, name.replace("^", " "), *(p for p in name.split("^") if len(p) > 3)})
        for keyword in ("PatientID", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName",
                        "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate"):
            found.add(str(ds.get(keyword, "")))
    return {s for s in found if len(s) >= 4}


def test_one_row_per_cine_loop_with_metadata(synth, ingested):
    out, summary = ingested
    views = pd.read_csv(synth / "views.csv")
    videos = pd.read_parquet(out / "videos.parquet")
    assert len(videos) == len(views) == summary["videos"]
    assert summary["studies"] == 4 and videos["study_key"].nunique() == 4
    assert set(videos["photometric_interpretation"]) >= {"YBR_FULL_422", "RGB", "MONOCHROME2"}
    assert "1.2.840.10008.1.2.4.50" in set(videos["transfer_syntax"])
    assert set(videos["fps"].round()) <= {30.0, 50.0, 60.0}
    assert (videos["rows"] == 96).all() and (videos["cols"] == 128).all()
    assert videos["frames"].between(16, 24).all()
    assert (videos["sector_source"] == "regions").all()
    assert set(videos["manufacturer"]) <= {"SynthSonic", "Acme Ultrasound", "Phantom Medical"}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["not_dicom"]  # the export log; the 4 screenshots are stills
    stills = pd.read_csv(out / "stills.csv")
    assert summary["stills"] == len(stills) == 4 and set(stills["study_key"]) == set(videos["study_key"])
    assert (stills["still_type"] == "2d").all() and not stills["calibrated"].any()  # no regions: uncalibrated 2-D
    assert set(stills["instance_key"]).isdisjoint(videos["instance_key"])
    assert "path" not in videos.columns and all("path" not in e for e in errors)


def test_companion_tables_are_rekeyed_to_pseudonyms(synth, ingested):
    out, summary = ingested
    salt = "unit-test-salt"
    videos = pd.read_parquet(out / "videos.parquet")
    reports = pd.read_csv(out / "reports.csv")
    labels = pd.read_csv(out / "labels.csv")
    views = pd.read_csv(out / "views.csv")
    src_reports, src_views = pd.read_csv(synth / "reports.csv"), pd.read_csv(synth / "views.csv")
    assert list(reports.columns) == ["study_key", "report", "split"]
    assert set(reports["study_key"]) == set(videos["study_key"]) == set(labels["study_key"])
    assert set(reports["study_key"]) == {pseudonym(u, salt, prefix="st_") for u in src_reports["study_uid"]}
    assert list(labels.columns)[0] == "study_key" and "ef" in labels.columns
    assert dict(zip(views["video_key"], views["view"])) == dict(zip(videos["video_key"], videos["view"]))
    assert sorted(views["view"]) == sorted(src_views["view"])
    split_of = dict(zip(reports["study_key"], reports["split"]))
    assert all(split_of[k] == s for k, s in zip(videos["study_key"], videos["split"]))
    assert summary["reports_matched"] == summary["labels_matched"] == 4 and summary["views_matched"] == len(videos)


def test_no_phi_in_outputs_or_logs(synth, tmp_path, caplog):
    phi = _phi_strings(synth)
    assert any(s.startswith("P") and s[1:].isdigit() for s in phi)  # the fake patient-ID folders are checked too
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        summary = ingest_synth(synth, out)
    shareable = [p for p in out.rglob("*") if p.is_file() and KEY_DIR not in p.parts]
    assert {p.name for p in shareable} == {"videos.parquet", "errors.jsonl", "reports.csv", "labels.csv", "views.csv",
                                           "stills.csv", "ingest_manifest.json", "settings.json"}
    texts = {p.name: (pd.read_parquet(p).to_json() if p.suffix == ".parquet" else p.read_text()) for p in shareable}
    texts["logs"] = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    texts["summary"] = json.dumps(summary)
    leaks = {(name, s) for name, text in texts.items() for s in phi if s in text}
    assert not leaks
    assert str(synth) not in caplog.text


def test_local_key_folder_maps_pseudonyms_back_to_files(synth, ingested):
    out, _ = ingested
    keys = out / KEY_DIR
    assert (keys / "README.txt").exists() and (keys / "paths.jsonl").exists()
    paths = IngestFolder(out).video_paths()
    videos = pd.read_parquet(out / "videos.parquet")
    assert set(paths) == set(videos["video_key"])
    for key, rel in paths.items():
        ds = dcmread(synth / "dicom" / rel, stop_before_pixels=True)
        assert pseudonym(str(ds.SOPInstanceUID), "unit-test-salt", prefix="vi_") == key


def test_key_folder_keeps_each_study_identity_for_sending_reports_back(synth, ingested):
    """``identities.jsonl`` (private, key folder only): the study's own identifiers and each loop's UIDs, which
    ``medvid pacs push`` needs to file a report under the patient's study."""
    out, _ = ingested
    path = out / KEY_DIR / "identities.jsonl"
    assert path.stat().st_mode & 0o077 == 0
    identities = IngestFolder(out).identities()
    videos = pd.read_parquet(out / "videos.parquet")
    assert set(identities) == set(videos["study_key"])
    paths = IngestFolder(out).video_paths()
    for row in videos.itertuples():
        ds = dcmread(synth / "dicom" / paths[row.video_key], stop_before_pixels=True)
        identity = identities[row.study_key]
        assert identity["study"]["StudyInstanceUID"] == ds.StudyInstanceUID
        assert identity["study"]["PatientID"] == ds.PatientID
        assert identity["study"]["PatientName"] == str(ds.PatientName)
        assert identity["instances"][row.video_key]["SOPInstanceUID"] == ds.SOPInstanceUID


def test_generated_salt_is_kept_so_reruns_are_stable(synth, tmp_path):
    out = tmp_path / "out"
    first = ingest_synth(synth, out)
    salt = (out / KEY_DIR / "salt.txt").read_text().strip()
    keys1 = pd.read_parquet(out / "videos.parquet")["video_key"].tolist()
    second = ingest_synth(synth, out)
    assert second["reused_from_cache"] == second["files"] == first["files"]
    assert pd.read_parquet(out / "videos.parquet")["video_key"].tolist() == keys1
    assert (out / KEY_DIR / "salt.txt").read_text().strip() == salt
    other = tmp_path / "other"
    ingest_synth(synth, other)  # a new dataset folder draws its own salt: keys do not link across datasets
    assert set(pd.read_parquet(other / "videos.parquet")["video_key"]).isdisjoint(keys1)


def test_rerun_without_companion_csvs_retires_only_its_own_stale_tables(synth, tmp_path):
    out = tmp_path / "out"
    ingest_synth(synth, out)
    (out / "views.csv").write_text((out / "views.csv").read_text() + "vi_mine,A4C\n")  # the user edited it
    ingest(synth / "dicom", out, "overwrite=true")  # no CSVs: last run's reports/labels would describe other data
    assert not (out / "reports.csv").exists() and not (out / "labels.csv").exists()
    assert "vi_mine" in (out / "views.csv").read_text()  # changed since we wrote it: not provably ours, kept


def _killed_after(cache: Path, done: int, mid_line: str) -> None:
    """The cache as a run killed after ``done`` finished files leaves it, then ``mid_line`` (a partial line or the
    next file's in-progress mark)."""
    lines = cache.read_text().splitlines(keepends=True)
    results = [i for i, line in enumerate(lines) if '"in_progress"' not in line]
    cache.write_text("".join(lines[: results[done - 1] + 1]) + mid_line)


def test_resume_after_a_killed_run(synth, tmp_path):
    out = tmp_path / "out"
    full = ingest_synth(synth, out, "salt=s")
    expected = pd.read_parquet(out / "videos.parquet")
    cache = out / KEY_DIR / "scan_cache.jsonl"
    _killed_after(cache, full["files"] // 2, '{"rel": "a/b", "sta')  # killed mid-line
    (out / "videos.parquet").unlink()
    again = ingest_synth(synth, out, "salt=s")
    assert again["reused_from_cache"] == full["files"] // 2
    pd.testing.assert_frame_equal(pd.read_parquet(out / "videos.parquet"), expected)
    assert again["videos"] == full["videos"]
    changed = ingest_synth(synth, out, "salt=t")  # another salt: cached results are not reused
    assert changed["reused_from_cache"] == 0


def test_a_file_a_killed_run_stopped_in_is_not_read_again(synth, tmp_path):
    """A kill (or the out-of-memory killer) while a file is read must not make every rerun read it again: it becomes
    an ``interrupted`` error, whatever the settings, until ``retry_interrupted=true``."""
    out = tmp_path / "out"
    full = ingest_synth(synth, out, "salt=s")
    cache = out / KEY_DIR / "scan_cache.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    victim = json.loads(lines[-2])  # the last file's in-progress mark: the run died while reading it
    assert victim["in_progress"]
    cache.write_text("".join(lines[:-1]))
    for settings in (("salt=s",), ("salt=s", "min_frames=3", "overwrite=true")):
        again = ingest_synth(synth, out, *settings)
        errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
        stopped = [e for e in errors if e["reason"] == "interrupted"]
        assert len(stopped) == 1 and "retry_interrupted=true" in stopped[0]["detail"]
        assert stopped[0]["file_key"] == pseudonym(victim["rel"], "s", prefix="f_")
        assert again["files"] == full["files"]
    retried = ingest_synth(synth, out, "salt=s", "retry_interrupted=true", "overwrite=true")
    assert "interrupted" not in retried["errors_by_reason"] and retried["videos"] == full["videos"]
    assert "interrupted" not in ingest_synth(synth, out, "salt=s")["errors_by_reason"]  # read: the mark is gone


def test_keep_paths_writes_relative_paths(synth, tmp_path):
    out = tmp_path / "out"
    ingest(synth / "dicom", out, "keep_paths=true")
    videos = pd.read_parquet(out / "videos.parquet")
    assert all((synth / "dicom" / p).is_file() and not Path(p).is_absolute() for p in videos["path"])


def test_duplicate_copies_are_typed(synth, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synth / "dicom", root)
    first = sorted(p for p in root.rglob("US001*"))[0]
    shutil.copy(first, root / "copy_of_a_loop")
    summary = ingest(root, tmp_path / "out")
    assert summary["errors_by_reason"]["duplicate"] == 1


def test_bad_companion_csv_is_a_clear_error(synth, tmp_path):
    bad = tmp_path / "views.csv"
    bad.write_text("sop_instance_uid,view\n1.2.3,NotAView\n")
    from medvid.errors import MedvidError

    with pytest.raises(MedvidError, match="unknown view"):
        ingest(synth / "dicom", tmp_path / "out", f"views={bad}")


def test_cli_exit_codes(synth, tmp_path):
    from typer.testing import CliRunner

    from medvid.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["ingest", str(synth / "dicom"), "--out", str(tmp_path / "a"), "progress=false"])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(app, ["ingest", str(tmp_path / "empty"), "--out", str(tmp_path / "b"), "progress=false"])
    assert bad.exit_code == 1


# ------------------------------------------------------------------------------------------ tables
def test_parse_and_format_sections_round_trip():
    from medvid.io.reports import format_report, parse_sections

    sections = {"Left Ventricle": "Normal size. LVEF 60%.", "Pericardium": "No pericardial effusion."}
    text = format_report(sections)
    assert text == "Left Ventricle: Normal size. LVEF 60%.\nPericardium: No pericardial effusion."
    assert parse_sections(text) == sections
    free = "Study of good quality. left ventricle: mildly dilated. Mitral Valve : mild MR; IVC: normal."
    assert parse_sections(free) == {"Left Ventricle": "mildly dilated.", "Mitral Valve": "mild MR;", "IVC": "normal."}
    assert parse_sections("no headers here") == {}
    with pytest.raises(ValueError):
        format_report({"Liver": "fine"})


def test_companion_csv_validation(tmp_path):
    from medvid.errors import MedvidError
    from medvid.io.reports import read_labels, read_reports

    cases = {
        "missing column": ("study_uid,text\n1.2,x\n", read_reports, "missing column"),
        "bad split": ("study_uid,report,split\n1.2,x,training\n", read_reports, "split must be"),
        "duplicate": ("study_uid,report\n1.2,x\n1.2,y\n", read_reports, "duplicated"),
        "blank key": ("study_uid,report\n,x\n", read_reports, "empty study_uid"),
        "non-numeric label": ("study_uid,ef\n1.2,sixty\n", read_labels, "non-numeric"),
    }
    for name, (text, reader, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        with pytest.raises(MedvidError, match=message):
            reader(path)
    ok = tmp_path / "labels.csv"
    ok.write_text("study_uid,ef,effusion\n1.2.840.1,55,\n1.2.840.2,30.5,1\n")
    labels = read_labels(ok)
    assert labels["study_uid"].tolist() == ["1.2.840.1", "1.2.840.2"]  # UIDs stay strings
    assert labels["ef"].tolist() == [55.0, 30.5] and pd.isna(labels["effusion"][0])


def test_ingest_folder_layout_is_the_on_disk_contract(tmp_path, monkeypatch):
    """File names and the key folder are what ingests wrote before IngestFolder existed; keys_dir wins over
    $MEDVID_KEYS_DIR, which wins over OUT/LOCAL_KEYS_DO_NOT_SHARE."""
    monkeypatch.delenv("MEDVID_KEYS_DIR", raising=False)
    folder = IngestFolder(tmp_path / "out")
    assert [p.name for p in (folder.videos, folder.errors, folder.reports, folder.labels, folder.views,
                             folder.measurements)] == ["videos.parquet", "errors.jsonl", "reports.csv", "labels.csv",
                                                       "views.csv", "measurements.csv"]
    assert folder.keys == tmp_path / "out" / "LOCAL_KEYS_DO_NOT_SHARE" and KEY_DIR == "LOCAL_KEYS_DO_NOT_SHARE"
    assert (folder.paths_file.name, folder.scan_cache.name) == ("paths.jsonl", "scan_cache.jsonl")
    monkeypatch.setenv("MEDVID_KEYS_DIR", str(tmp_path / "env_keys"))
    assert folder.keys == tmp_path / "env_keys"
    assert IngestFolder(tmp_path / "out", tmp_path / "given").keys == tmp_path / "given"


def test_ingest_folder_readers_and_salt(tmp_path, monkeypatch):
    from medvid.errors import MedvidError

    monkeypatch.delenv("MEDVID_KEYS_DIR", raising=False)
    folder = IngestFolder(tmp_path)
    with pytest.raises(MedvidError, match="run `medvid ingest"):
        folder.read_videos()
    with pytest.raises(MedvidError, match="local key file"):
        folder.video_paths()
    assert list(folder.read_reports().columns) == ["study_key", "report", "split"] and folder.read_reports().empty
    folder.write_videos([{"study_key": "st_a", "video_key": "vi_a", "frames": 3, "zeta": 1, "alpha": None}])
    videos = folder.read_videos()
    assert list(videos.columns)[:10] == ["study_key", "video_key", "instance_key", "series_key", "patient_key",
                                         "file_key", "view", "split", "frames", "fps"]
    assert list(videos.columns)[10:] == ["alpha", "zeta"] and videos.loc[0, "view"] == "" == videos.loc[0, "split"]
    (tmp_path / "reports.csv").write_text("study_key,report\nst_a,Left Ventricle: normal.\n")
    assert folder.read_reports()["split"].tolist() == [""]
    folder.open_keys()
    salt = folder.salt()
    assert len(salt) == 32 and folder.salt() == salt and folder.salt("given") == "given"
    folder.write_paths([{"file_key": "f_a", "path": "a/b.dcm", "video_key": "vi_a"},
                        {"file_key": "f_b", "path": "a/c.dcm", "video_key": None}])
    assert folder.video_paths() == {"vi_a": "a/b.dcm"}


def test_scan_cache_reuses_only_unchanged_files_of_the_same_settings(tmp_path):
    from medvid.io.ingest_folder import ScanCache

    src, cache_path = tmp_path / "a.dcm", tmp_path / "scan_cache.jsonl"
    src.write_bytes(b"x")

    def result(cache: ScanCache, value: object = None) -> object:
        return cache.result("a.dcm", src, lambda: value, lambda: "interrupted")

    with ScanCache(cache_path, "s1") as cache:
        assert result(cache, {"video": 1}) == {"video": 1} and cache.reused == 0
    with open(cache_path, "a") as f:
        f.write('{"rel": "b.dcm", "sta')  # a line cut by a kill
    with ScanCache(cache_path, "s1") as cache:
        assert result(cache) == {"video": 1} and cache.reused == 1
    with ScanCache(cache_path, "s2") as cache:  # other settings: nothing reused
        assert result(cache, "again") == "again" and cache.reused == 0
    src.write_bytes(b"xy")  # changed since: not reused
    with ScanCache(cache_path, "s1") as cache:
        assert result(cache, "changed") == "changed"
    with ScanCache(cache_path, "s1", resume=False) as cache:  # resume=false starts the cache afresh
        assert cache.hits == {}
    assert cache_path.read_text() == ""
    assert ScanCache.fingerprint("salt", 1) == ScanCache.fingerprint("salt", 1) != ScanCache.fingerprint("salt", 2)


def test_a_tampered_manifest_cannot_make_ingest_delete_files_outside_its_tables(tmp_path):
    """An ``ingest_manifest.json`` naming ``../victim`` (with the victim's true digest) removes nothing: only the
    companion tables ingest writes are ever retired."""
    import hashlib
    import json

    from medvid.io.ingest_folder import MANIFEST, REPORTS, IngestFolder

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file")
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    (out / REPORTS).write_text("study_key,report\n")
    own = hashlib.sha256((out / REPORTS).read_bytes()).hexdigest()
    (out / MANIFEST).write_text(json.dumps({"tables": {"../victim.txt": digest, str(victim): digest, REPORTS: own}}))
    IngestFolder(out).retire_stale_tables([])
    assert victim.read_text() == "a user's file"
    assert not (out / REPORTS).exists()  # its own stale table still goes


def test_missing_companion_files_are_all_named_with_their_settings_before_the_scan(synth, tmp_path, monkeypatch):
    """Every missing CSV is named with its setting and where a relative path was looked for, before any DICOM file
    is read (no output, no key folder yet)."""
    from medvid.errors import MedvidError

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(MedvidError) as err:
        ingest(synth / "dicom", out, "reports=nowhere/reports.csv", f"labels={tmp_path / 'labels.csv'}",
               f"views={synth / 'views.csv'}")
    message = str(err.value)
    assert f"reports=nowhere/reports.csv (looked for {tmp_path / 'nowhere' / 'reports.csv'})" in message
    assert f"labels={tmp_path / 'labels.csv'}" in message and "views=" not in message
    assert f"resolve against the working folder ({tmp_path})" in message
    assert not out.exists()
