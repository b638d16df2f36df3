"""The review app (apps/) under Streamlit's AppTest: every page, review save / sign off / export,
each error state, path traversal and PHI. Data: a small synthetic DICOM export through the real
ingest, a drafts fixture written to docs/drafting_contract.md, and a real zero-shot run (tiny
untrained checkpoint) on a short synthetic Cholec80-layout video."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medvid.apps import access, store
from medvid.report import reviews
from medvid.config import load_config
from medvid.errors import MedvidError, PathRefused
from medvid.utils import resolve_under
from app_testdata import BIPLANE, SECTIONS, build_outputs, edit_draft, write_drafts, write_measurements
from echo_testdata import ingest_synth

APPS = Path(__file__).resolve().parents[1] / "apps"
TOKEN = "test-launch-token"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_model):
    return build_outputs(tmp_path_factory.mktemp("app"), tiny_model())


def app_env(monkeypatch, data, dicom=None, cache=None, keys=None):
    cfg = store.AppConfig(data=tuple(Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)),
                          dicom_roots=(Path(dicom),) if dicom else (), cache_dir=Path(cache) if cache else None,
                          keys_dir=Path(keys) if keys else None)
    monkeypatch.setenv(store.ENV, cfg.to_json())
    monkeypatch.setenv(access.TOKEN_ENV, TOKEN)
    return cfg


def run_page(page: str | None = None, query: dict | None = None, session: dict | None = None, timeout: float = 60,
             token: str | None = TOKEN):
    """Run one page as a fresh browser session that opened the address with ``?token=`` (None: without it)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APPS / "review_app.py"), default_timeout=timeout)
    if page:
        at.switch_page(page)
    if token is not None:
        at.query_params["token"] = token
    for k, v in (query or {}).items():
        at.query_params[k] = v
    for k, v in (session or {}).items():
        at.session_state[k] = v
    return at.run()


def page_text(at) -> str:
    """Every value the page rendered (markdown, tables, inputs, messages) as one string."""
    parts = []
    for node in _walk(at._tree):
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for attr in ("value", "body", "label"):
            v = getattr(node, attr, None)
            if isinstance(v, (str, int, float)):
                parts.append(str(v))
    return "\n".join(parts)


def table_cells(at) -> str:
    """Every heading and cell of the page's ``st.table`` elements, as shown to the Markdown renderer."""
    return "\n".join(str(v) for t in at.get("table") for v in (*t.value.columns, *t.value.to_numpy().ravel()))


def shown_table(at, column: str) -> pd.DataFrame:
    """The page's ``st.table`` that has ``column``, its cells unescaped (``ui.plain`` undone): what a reader sees."""
    [df] = [t.value for t in at.get("table") if column in t.value.columns]
    return df.map(lambda v: re.sub(r"\\(.)", r"\1", v) if isinstance(v, str) else v)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


# --------------------------------------------------------------------------- store


def test_paths_are_refused_outside_the_roots_traversal_absolute_and_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (root / "sub" / "ok.txt").write_text("ok")
    (root / "link").symlink_to(outside)
    (root / "sub" / "file_link").symlink_to(outside / "secret.txt")
    roots = [root]
    assert resolve_under(root, "sub/ok.txt", roots) == (root / "sub" / "ok.txt").resolve()
    for bad in ("../outside/secret.txt", "sub/../../outside/secret.txt", str(outside / "secret.txt"),
                "/etc/passwd", "link/secret.txt", "sub/file_link"):
        with pytest.raises(PathRefused):
            resolve_under(root, bad, roots)
    with pytest.raises(PathRefused):
        resolve_under(outside, "secret.txt", roots)
    for key in ("../x", "st_1/..", "a b", "", "/etc", "st_" + "0" * 100):
        assert not store.valid_key(key)
    with pytest.raises(PathRefused):
        reviews.latest(roots, root, "../../etc/passwd")


def test_discover_and_study_table(outputs):
    src = store.discover([outputs["data"]])
    d = outputs["data"]
    assert src.ingests == [(d / "ingest").resolve()] and src.drafts == [(d / "draft_out").resolve()]
    assert {p.name for p in src.zero_shots} == {"zero_shot_phase", "zero_shot_tools"}
    assert [p.name for p in src.video_roots] == ["cholec80"]
    table = store.read_drafts(src.drafts)
    assert set(table.drafts) == {*outputs["drafted"], outputs["foreign"]} and len(table.bad_lines) == 1
    df = store.study_table(store.read_videos(src.ingests), table, {})
    status = dict(zip(df["study"], df["status"]))
    assert status[outputs["failed"]] == "error" and status[outputs["drafted"][0]] == "draft"
    assert all(status[k] == "no draft" for k in outputs["undrafted"])
    low = store.filter_studies(df, phenotype="ef", op="<", value=40)
    assert low["study"].tolist() == [outputs["low_ef"]]
    assert store.filter_studies(df, statuses=["error"])["study"].tolist() == [outputs["failed"]]
    assert store.filter_studies(df, query=outputs["high_ef"][3:9])["study"].tolist() == [outputs["high_ef"]]


# --------------------------------------------------------------------------- access


def test_every_page_needs_the_launch_token_before_reading_any_data(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"], outputs["dicom"])
    key = outputs["drafted"][0]
    pages = ((None, {}), ("pages/1_Echo_studies.py", {}), ("pages/2_Study.py", {"study": key}),
             ("pages/3_Surgical_video.py", {}))
    for token in (None, "", "wrong-token", TOKEN + "x"):
        for page, query in pages:
            at = run_page(page, query, token=token)
            no_exception(at)
            assert any("access token" in e.value for e in at.error), (page, token)
            text = page_text(at)
            assert key not in text and "ingest folder" not in text and "Phase ribbon" not in text
    monkeypatch.delenv(access.TOKEN_ENV)  # not started by `medvid app`: no token opens it
    at = run_page("pages/1_Echo_studies.py", token="")
    assert any("access token" in e.value for e in at.error) and key not in page_text(at)


def test_the_token_is_remembered_for_the_browser_session(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"])
    at = run_page("pages/1_Echo_studies.py")
    no_exception(at)
    assert not at.error and outputs["low_ef"] in page_text(at)
    del at.query_params["token"]  # navigation drops it from the address
    at.selectbox(key="list_choice").set_value(outputs["low_ef"]).run()
    at.button(key="list_open").click().run()
    no_exception(at)
    assert not at.error and at.session_state["study"] == outputs["low_ef"]
    assert [a.label for a in at.text_area] == list(SECTIONS)


def test_host_and_origin_allow_list():
    allowed = access.allowed_hosts("127.0.0.1", ["review.example.org"])
    ok = ({"Host": "127.0.0.1:8501"}, {"Host": "localhost:8501", "Origin": "http://localhost:8501"},
          {"Host": "[::1]:8501", "Origin": "http://[::1]:8501"}, {"Host": "127.0.0.2:8501"},
          {"Host": "Review.Example.org.", "Origin": "https://review.example.org"}, {})
    for headers in ok:
        assert access.headers_ok(headers, allowed), headers
    refused = ({"Host": "evil.example.com:8501", "Origin": "http://evil.example.com:8501"},  # DNS rebinding
               {"Host": "127.0.0.1:8501", "Origin": "http://evil.example.com"},
               {"Host": "evil.example.com"}, {"Origin": "http://localhost:8501"}, {"Host": "localhost:99999"},
               {"Host": "user@localhost"}, {"Host": "localhost", "Origin": "null"},
               {"Host": "localhost", "Origin": "file://localhost/x"}, {"Host": "127.0.0.1.evil.com"})
    for headers in refused:
        assert not access.headers_ok(headers, allowed), headers
    assert access.allowed_hosts("0.0.0.0") == access.LOOPBACK_NAMES
    assert access.token_ok("abc", "abc") and not access.token_ok("abc", "") and not access.token_ok(None, "abc")
    assert len(access.new_token()) >= 40 and access.new_token() != access.new_token()


# --------------------------------------------------------------------------- pages


def test_home_and_list_pages(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"], outputs["dicom"])
    at = run_page()
    no_exception(at)
    assert "1** ingest folder" in page_text(at)
    at = run_page("pages/1_Echo_studies.py")
    no_exception(at)
    text = page_text(at)
    for key in outputs["drafted"]:
        assert f"[{key}](Study?study={key}&token={TOKEN})" in text  # a link opens a new tab: a new session
    assert "could not be read" in text  # the corrupt drafts.jsonl line is reported, not fatal
    at.radio(key="list_which").set_value("not drafted").run()  # studies without a draft: a list of their own
    text = page_text(at)
    for key in [outputs["failed"], *outputs["undrafted"]]:
        assert f"[{key}](Study?study={key}&token={TOKEN})" in text
    assert outputs["drafted"][0] not in [m.value for m in at.markdown if m.value.startswith("| study")][0]
    at.radio(key="list_which").set_value("drafted").run()
    at.selectbox(key="list_pheno").set_value("ef").run()
    at.number_input(key="list_value").set_value(40.0).run()
    table = [m.value for m in at.markdown if m.value.startswith("| study")][0]
    assert outputs["low_ef"] in table and outputs["high_ef"] not in table
    at.selectbox(key="list_choice").set_value(outputs["low_ef"]).run()
    at.button(key="list_open").click().run()
    no_exception(at)
    assert at.session_state["study"] == outputs["low_ef"]


def test_study_page_loops_draft_provenance(outputs, monkeypatch, tmp_path):
    cfg = app_env(monkeypatch, [outputs["data"], tmp_path], outputs["dicom"], cache=tmp_path / "cache")
    key = outputs["drafted"][0]
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert not at.error and all("drafts.jsonl could not be read" in w.value for w in at.warning)
    assert [a.label for a in at.text_area] == list(SECTIONS)
    assert at.text_area[0].value.startswith("Left Ventricle text of draft 0")
    text = page_text(at)
    n_loops = int((pd.read_parquet(outputs["data"] / "ingest" / "videos.parquet")["study_key"] == key).sum())
    assert text.count("autoplay: true") == n_loops  # every loop plays, as a loop
    assert "loop: true" in text and "muted: true" in text
    cached = sorted((tmp_path / "cache" / "loops").glob("*.mp4"))
    assert len(cached) == n_loops and all(p.stat().st_size > 0 for p in cached)
    # values from the draft file reach Markdown-rendering elements escaped (ui.plain): shown as typed
    assert "Drafted by model tiny\\-echo" in text and "Neighbour studies" in text and "0\\.900" in table_cells(at)
    assert "ejection\\_fraction" in table_cells(at) and "0\\.42" in table_cells(at)  # zero-shot finding
    mtimes = [p.stat().st_mtime_ns for p in cached]
    run_page("pages/2_Study.py", {"study": key})  # second visit: served from the loop cache
    assert [p.stat().st_mtime_ns for p in cached] == mtimes
    assert cfg.cache == tmp_path / "cache"


def test_study_page_shows_vendor_measurements_on_their_loops(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    key = outputs["drafted"][0]
    loop = write_measurements(data / "ingest", key)
    view = next(v["view"] for v in store.read_drafts([data / "draft_out"]).drafts[key].data["videos"]
                if v["video_key"] == loop["video_key"])
    app_env(monkeypatch, data)
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert "Vendor measurements" in [s.value for s in at.subheader]
    df = shown_table(at, "taken on")
    assert df["measurement"].tolist() == ["Left Ventricular Ejection Fraction by US", "LVIDd", "E/A ratio"]
    assert df["value"].tolist() == ["62.0", "5.1", "1.3"] and df["unit"].tolist() == ["%", "cm", "{ratio}"]
    assert df["method"].tolist() == [BIPLANE, "", ""]
    assert df["taken on"].tolist() == [f"{view} loop {loop['video_key']}", "not in this study's loops",
                                       "no image named"]
    assert "replaced" not in df and "LVEF of another study" not in table_cells(at)
    at.toggle(key=f"replaced::{key}").set_value(True).run()  # the earlier SR's value, on request only
    df = shown_table(at, "taken on")
    assert df["value"].tolist() == ["62.0", "40.0", "5.1", "1.3"]
    assert df["replaced"].tolist() == ["", "replaced", "", ""]
    # values from the file reach the table escaped, never as Markdown
    path = data / "ingest" / "measurements.csv"
    path.write_text(path.read_text().replace("LVIDd", PAYLOADS[0]))
    at = run_page("pages/2_Study.py", {"study": key})
    assert PAYLOADS[0] not in table_cells(at) and PAYLOADS[0] in shown_table(at, "taken on")["measurement"].tolist()


def test_unreadable_or_hostile_measurements_are_messages(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    key = outputs["drafted"][0]
    write_measurements(data / "ingest", key)
    rows, more = store.read_measurements([data], [data / "ingest"], key)
    assert len(rows) == 4 and not more
    monkeypatch.setattr(store, "MAX_MEASUREMENTS", 2)  # bounded: a study's rows beyond the cap are not read
    rows, more = store.read_measurements([data], [data / "ingest"], key)
    assert len(rows) == 2 and more
    monkeypatch.undo()
    path = data / "ingest" / "measurements.csv"
    outside = tmp_path / "outside.csv"
    path.rename(outside)
    path.symlink_to(outside)
    with pytest.raises(MedvidError, match="refused"):
        store.read_measurements([data], [data / "ingest"], key)
    path.unlink()
    path.write_text("a,b\n1,2\n")
    app_env(monkeypatch, data)
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert any("Vendor measurements not shown" in w.value and "not a measurements table" in w.value
               for w in at.warning)
    assert str(data) not in page_text(at) and [a.label for a in at.text_area] == list(SECTIONS)  # the rest shows


def test_study_page_says_which_loops_were_left_out_of_the_draft(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    key = outputs["drafted"][0]
    left_out: list[str] = []

    def leave_one_out(row):
        left_out.append(dropped := row["videos"].pop()["video_key"])
        for sec in row["sections"].values():
            sec["videos"] = [v for v in sec["videos"] if v["video_key"] != dropped]
        row["left_out"] = [{"video_key": dropped, "reason": "truncated", "detail": "pixel data ends early"},
                           "not an entry"]

    edit_draft(data / "draft_out" / "drafts.jsonl", key, leave_one_out)
    [dropped] = left_out
    app_env(monkeypatch, data)
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert any("1 loop(s) of this study were left out of this draft because they could not be read" in w.value
               for w in at.warning)
    assert not any("not in the ingest" in w.value for w in at.warning)  # a left-out loop is not foreign
    assert shown_table(at, "reason").to_dict("records") == [
        {"loop": dropped, "reason": "truncated", "detail": "pixel data ends early"}]
    assert "Left out of the draft: truncated" in [c.value for c in at.caption]
    other = run_page("pages/2_Study.py", {"study": outputs["drafted"][1]})  # every loop used: no message
    assert not any("left out" in w.value for w in other.warning)


def test_edit_save_sign_off_export_keep_the_draft(outputs, monkeypatch, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(outputs["data"] / "ingest", data / "ingest", symlinks=True)
    shutil.copytree(outputs["data"] / "draft_out", data / "draft_out")
    app_env(monkeypatch, data)
    draft_bytes = {p: p.read_bytes() for p in (data / "draft_out").rglob("*") if p.is_file()}
    key = outputs["drafted"][1]
    at = run_page("pages/2_Study.py", {"study": key})
    at.text_area(key=f"sec::{key}::Mitral Valve").set_value("Mild mitral regurgitation.")
    at.button(key="save").click().run()
    assert any("reviewer" in e.value for e in at.error)  # no name typed: nothing written
    assert not (data / "draft_out" / "reviewed").exists()
    at.text_input(key="reviewer").set_value("Dr Reviewer").run()
    at.button(key="save").click().run()
    no_exception(at)
    review = json.loads((data / "draft_out" / "reviewed" / f"{key}.json").read_text())
    line = [ln for ln in (data / "draft_out" / "drafts.jsonl").read_text().splitlines()
            if ln.startswith(f'{{"study_key": "{key}"')][0]
    assert review["status"] == "edited" and review["reviewer"] == "Dr Reviewer"
    assert review["draft_sha256"] == hashlib.sha256(line.encode()).hexdigest()
    assert review["time"].endswith("+00:00")
    assert review["sections"]["Mitral Valve"] == "Mild mitral regurgitation."
    assert "+Mild mitral regurgitation." in review["diff"]["Mitral Valve"] and review["diff"]["Aortic Valve"] == ""
    assert "Status:** edited" in page_text(at)
    at.button(key="sign_off").click().run()
    signed = json.loads((data / "draft_out" / "reviewed" / f"{key}.json").read_text())
    assert signed["status"] == "signed_off" and signed["version"] == 2
    assert "Status:** signed off" in page_text(at)
    at.button(key="export").click().run()
    no_exception(at)
    exported = (data / "draft_out" / "reviewed" / f"{key}.v2.txt").read_text()
    assert exported.startswith("FINAL") and "review version 2" in exported and "Mild mitral regurgitation." in exported
    sr = data / "draft_out" / "reviewed" / f"{key}.v2.sr.dcm"
    from medvid.report.sr import read_report_sr

    sections, measurements = read_report_sr(sr)
    assert sections["Mitral Valve"] == "Mild mitral regurgitation." and measurements["ef"] == pytest.approx(55.0)
    assert pydicom.dcmread(sr).CompletionFlag == "COMPLETE"  # signed off: final
    assert {p: p.read_bytes() for p in draft_bytes} == draft_bytes  # drafts.jsonl and drafts/ untouched
    assert (data / "ingest" / "reports.csv").exists()


def copy_outputs(outputs: dict, data: Path) -> Path:
    """A writable copy of the ingest and draft outputs (reviews are written beside the draft)."""
    shutil.copytree(outputs["data"] / "ingest", data / "ingest", symlinks=True)
    shutil.copytree(outputs["data"] / "draft_out", data / "draft_out")
    return data


def open_tab(key: str, reviewer: str = "Dr Reviewer"):
    """A fresh browser tab on a study with the reviewer's name typed."""
    at = run_page("pages/2_Study.py", {"study": key})
    at.text_input(key="reviewer").set_value(reviewer).run()
    return at


def test_two_tabs_saving_at_once_lose_no_update(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    key, reviewed = outputs["drafted"][1], data / "draft_out" / "reviewed"
    first, second = open_tab(key, "Dr First"), open_tab(key, "Dr Second")
    first.text_area(key=f"sec::{key}::Mitral Valve").set_value("First tab's text.")
    first.button(key="save").click().run()
    second.text_area(key=f"sec::{key}::Aortic Valve").set_value("Second tab's text.")
    second.button(key="save").click().run()  # made on the version before the first tab's save
    no_exception(second)
    assert any("changed since you opened it" in e.value for e in second.error)
    review = json.loads((reviewed / f"{key}.json").read_text())
    assert review["version"] == 1 and review["reviewer"] == "Dr First"
    assert review["sections"]["Mitral Valve"] == "First tab's text." and not (reviewed / f"{key}.v2.json").exists()
    second.button(key="reload").click().run()  # loads version 1, then the change is made again
    assert second.text_area(key=f"sec::{key}::Mitral Valve").value == "First tab's text."
    second.text_area(key=f"sec::{key}::Aortic Valve").set_value("Second tab's text.")
    second.button(key="save").click().run()
    review = json.loads((reviewed / f"{key}.json").read_text())
    assert review["version"] == 2 and review["sections"]["Mitral Valve"] == "First tab's text."
    assert review["sections"]["Aortic Valve"] == "Second tab's text."
    # two saves racing for the same version: the file system lets exactly one create it
    draft = store.read_drafts([data / "draft_out"]).drafts[key]
    roots = [data]
    reviews.save(roots, draft, {}, "Dr A", sign_off=False, base_version=2)
    with pytest.raises(reviews.ReviewConflict, match="changed since you opened it"):
        reviews.save(roots, draft, {}, "Dr B", sign_off=False, base_version=2)


def test_sign_off_is_final_amendments_are_new_versions_and_audited(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    key, reviewed = outputs["drafted"][0], data / "draft_out" / "reviewed"
    at = open_tab(key, "Dr Signer")
    at.button(key="sign_off").click().run()
    signed = (reviewed / f"{key}.v1.json").read_bytes()
    at = open_tab(key, "Dr Later")
    assert all(a.disabled for a in at.text_area) and at.button(key="save").disabled  # signed: read-only
    assert at.button(key="sign_off").disabled and at.button(key="sign_next").disabled
    at.toggle(key=f"amend::{key}").set_value(True).run()  # amend: a new version, with a reason
    assert not any(a.disabled for a in at.text_area)
    at.text_area(key=f"sec::{key}::Left Ventricle").set_value("Changed after sign-off.")
    at.button(key="save").click().run()
    assert any("signed off and cannot be changed" in e.value for e in at.error)
    assert json.loads((reviewed / f"{key}.json").read_text())["version"] == 1
    at.text_input(key=f"reason::{key}").set_value("Wall motion re-read").run()
    at.button(key="save").click().run()
    no_exception(at)
    amended = json.loads((reviewed / f"{key}.json").read_text())
    assert amended["version"] == 2 and amended["sections"]["Left Ventricle"] == "Changed after sign-off."
    assert amended["amendment"]["amends"] == 1 and amended["amendment"]["reason"] == "Wall motion re-read"
    assert amended["amendment"]["reviewer"] == "Dr Later" and amended["amendment"]["time"].endswith("+00:00")
    assert (reviewed / f"{key}.v1.json").read_bytes() == signed  # the signed-off version is kept as it was
    assert [v["version"] for v in reviews.history([data], data / "draft_out", key)] == [1, 2]
    audit = [json.loads(line) for line in (reviewed / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["version"], a["reviewer"]) for a in audit] == [("sign_off", 1, "Dr Signer"),
                                                                          ("amend", 2, "Dr Later")]
    assert audit[1]["reason"] == "Wall motion re-read"


def test_an_export_stays_tied_to_its_version(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    key, reviewed = outputs["drafted"][0], data / "draft_out" / "reviewed"
    at = open_tab(key)
    at.button(key="sign_off").click().run()
    at.button(key="export").click().run()
    final = (reviewed / f"{key}.v1.txt").read_text()
    assert final.startswith("FINAL") and "review version 1" in final
    assert "Estimates by medvid (not measured):\n  ef: 35 %\n" in final  # labelled an estimate, whole percent
    at.toggle(key=f"amend::{key}").set_value(True).run()
    at.text_input(key=f"reason::{key}").set_value("typo").run()
    at.text_area(key=f"sec::{key}::Left Ventricle").set_value("Amended text.")
    at.button(key="save").click().run()  # an amendment, not signed off yet
    no_exception(at)
    assert (reviewed / f"{key}.v1.txt").read_text() == final  # the FINAL export names version 1 only
    assert not (reviewed / f"{key}.txt").exists() and not (reviewed / f"{key}.v2.txt").exists()
    assert not [b for b in at.get("download_button")]  # no download offered for an older version
    assert any("older than the current version 2" in c.value for c in at.caption)
    at.button(key="export").click().run()
    assert (reviewed / f"{key}.v2.txt").read_text().startswith("REVIEWED (not signed off)")
    assert [a["action"] for a in reviews.read_audit([data], data / "draft_out")] == [
        "sign_off", "export", "amend", "export"]


def test_reviews_saved_before_versions_still_read(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    key, reviewed = outputs["drafted"][1], data / "draft_out" / "reviewed"
    reviewed.mkdir()
    old = {"study_key": key, "status": "edited", "reviewer": "Dr Old", "time": "2026-11-30T10:00:00+00:00",
           "sections": {"Left Ventricle": "Old review text.", "Mitral Valve": "m", "Aortic Valve": "a"},
           "diff": {}, "draft_sha256": "0" * 64}
    (reviewed / f"{key}.json").write_text(json.dumps(old))
    at = open_tab(key)
    no_exception(at)
    assert "Status:** edited" in page_text(at) and any("version 1" in t.value for t in at.text)
    assert at.text_area(key=f"sec::{key}::Left Ventricle").value == "Old review text."
    at.text_area(key=f"sec::{key}::Mitral Valve").set_value("Changed.")
    at.button(key="save").click().run()
    assert json.loads((reviewed / f"{key}.v1.json").read_text())["reviewer"] == "Dr Old"  # kept as version 1
    assert json.loads((reviewed / f"{key}.json").read_text())["version"] == 2


PAYLOADS = ("![pixel](http://127.0.0.1:9/pixel.png)", ":green[Signed off]", "<img src=x onerror=alert(1)>")


def test_report_text_is_plain_text_everywhere(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    key = outputs["drafted"][0]

    def inject(row):
        for sec in row["sections"].values():
            sec["text"] += " " + " ".join(PAYLOADS)
            sec["videos"][0]["view"] = PAYLOADS[1]
        row["provenance"]["model"]["name"] = PAYLOADS[1]
        row["videos"][0]["view"] = PAYLOADS[0]

    edit_draft(data / "draft_out" / "drafts.jsonl", key, inject)
    app_env(monkeypatch, data)
    at = open_tab(key, "Dr Plain")
    at.text_area(key=f"sec::{key}::Left Ventricle").set_value("Reviewed. " + " ".join(PAYLOADS))
    at.button(key="save").click().run()
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    rendered = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "title",
                                     "subheader") for e in at.get(kind)]
    rendered += [e.label for kind in ("text_area", "expander", "button", "text_input") for e in at.get(kind)]
    rendered.append(table_cells(at))
    for payload in PAYLOADS:  # never handed to a Markdown renderer as it stands
        for value in rendered:
            assert payload not in value, (payload, value)
    plain = "\n".join(t.value for t in at.text)  # shown as plain text: draft text, review diff, reviewer
    assert all(payload in plain for payload in PAYLOADS) and "+Reviewed." in plain
    at = run_page("pages/1_Echo_studies.py")
    table = [m.value for m in at.markdown if m.value.startswith("| study")][0]
    assert all(payload not in table for payload in PAYLOADS)


def test_a_linked_reviewed_folder_leaves_the_study_read_only(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data / "draft_out" / "reviewed").symlink_to(elsewhere)
    app_env(monkeypatch, data)
    key = outputs["drafted"][0]
    at = open_tab(key)
    no_exception(at)
    assert not at.error and [a.label for a in at.text_area] == list(SECTIONS)  # the study is still shown
    assert any("symbolic link" in w.value and "read-only" in w.value for w in at.warning)
    assert at.button(key="save").disabled and at.button(key="sign_off").disabled
    draft = store.read_drafts([data / "draft_out"]).drafts[key]
    inside = data / "inside"
    inside.mkdir()
    (data / "draft_out" / "reviewed").unlink()
    (data / "draft_out" / "reviewed").symlink_to(inside)  # a link even inside the roots is not written through
    with pytest.raises(MedvidError, match="symbolic link"):
        reviews.save([data], draft, {}, "Dr R", sign_off=False, base_version=0)
    assert not any(elsewhere.iterdir()) and not any(inside.iterdir())


def test_reviewer_names_must_fit_a_dicom_person_name(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    key = outputs["drafted"][0]
    for bad in ("A" * 65, "Doe\\John", "Doe^John\nSmith", "A^B^C^D^E^F", "a=b=c=d"):
        at = open_tab(key, bad)
        assert at.error and at.button(key="save").disabled, bad  # refused as it is typed
        with pytest.raises(MedvidError):
            reviews.check_reviewer(bad)
    assert not (data / "draft_out" / "reviewed").exists()
    assert reviews.check_reviewer("  Doe^Jane^^Dr  ") == "Doe^Jane^^Dr" and reviews.check_reviewer("B" * 64)
    at = open_tab(key, "Doe^Jane")
    at.button(key="sign_off").click().run()
    at.button(key="export").click().run()
    no_exception(at)
    sr = pydicom.dcmread(data / "draft_out" / "reviewed" / f"{key}.v1.sr.dcm")
    assert "Doe^Jane" in str(sr.VerifyingObserverSequence[0].VerifyingObserverName)


def test_next_previous_and_query_param_validation(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"])
    table = store.read_drafts([outputs["data"] / "draft_out"])
    df = store.worklist(store.study_table(store.read_videos([outputs["data"] / "ingest"]), table, {}), table)
    order = df[df["study"].isin(set(table.drafts))]["study"].tolist()  # the worklist: drafted studies
    at = run_page("pages/2_Study.py", {"study": order[0]})
    assert at.button(key="nav_prev").disabled
    at.button(key="nav_next").click().run()
    assert at.query_params["study"] == [order[1]] or at.query_params["study"] == order[1]
    assert at.session_state["study"] == order[1]
    at.button(key="nav_prev").click().run()
    assert at.session_state["study"] == order[0]
    for bad in ("../../etc/passwd", "/etc/passwd", "st_notastudy", "<script>"):
        at = run_page("pages/2_Study.py", {"study": bad})
        no_exception(at)
        assert any("names no known study" in e.value for e in at.error)
        assert "passwd" not in "".join(m.value for m in at.markdown)


def test_error_states_show_messages(outputs, monkeypatch, tmp_path):
    # no data roots at all, and an empty data root
    monkeypatch.delenv(store.ENV, raising=False)
    monkeypatch.setenv(access.TOKEN_ENV, TOKEN)
    at = run_page()
    no_exception(at)
    assert any("No data roots" in e.value for e in at.error)
    empty = tmp_path / "empty"
    empty.mkdir()
    app_env(monkeypatch, empty)
    for page, needle in (("pages/1_Echo_studies.py", "No echo studies"), ("pages/2_Study.py", "No echo studies"),
                         ("pages/3_Surgical_video.py", "No zero-shot output")):
        at = run_page(page)
        no_exception(at)
        assert any(needle in i.value for i in at.info), (page, [i.value for i in at.info])
    # a study whose DICOM files vanished (DICOM root without them), a failed draft, no draft, a foreign draft
    app_env(monkeypatch, outputs["data"], tmp_path / "empty", cache=tmp_path / "empty" / "cache")
    at = run_page("pages/2_Study.py", {"study": outputs["drafted"][0]})
    no_exception(at)
    loop_msgs = [w.value for w in at.warning if "Loop not shown" in w.value]
    assert loop_msgs and all("not found under the DICOM root" in m for m in loop_msgs)
    at = run_page("pages/2_Study.py", {"study": outputs["failed"]})
    assert any("Drafting failed" in e.value and "no\\_loops\\_decoded" in e.value for e in at.error)
    at = run_page("pages/2_Study.py", {"study": outputs["undrafted"][0]})
    assert any("No draft for this study" in i.value for i in at.info)
    at = run_page("pages/2_Study.py", {"study": outputs["foreign"]})
    no_exception(at)
    assert any("made from other data" in w.value for w in at.warning)
    assert any("No ingested loops" in i.value for i in at.info)
    # without --dicom-root the loops are explained, not attempted
    app_env(monkeypatch, outputs["data"])
    at = run_page("pages/2_Study.py", {"study": outputs["drafted"][0]})
    assert any("--dicom-root" in i.value for i in at.info)


def test_key_folder_kept_outside_the_ingest(outputs, monkeypatch, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(outputs["data"] / "ingest", data / "ingest")
    shutil.move(data / "ingest" / "LOCAL_KEYS_DO_NOT_SHARE", tmp_path / "keys")
    monkeypatch.delenv("MEDVID_KEYS_DIR", raising=False)
    key = outputs["drafted"][0]
    app_env(monkeypatch, data, outputs["dicom"], cache=data / "cache")
    at = run_page("pages/2_Study.py", {"study": key})
    assert at.warning and all("key file is missing" in w.value for w in at.warning)
    app_env(monkeypatch, data, outputs["dicom"], cache=data / "cache", keys=tmp_path / "keys")
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert not at.warning and len(at.get("video")) == 4


def test_unreadable_key_file_is_reported_without_its_path(outputs, tmp_path):
    """The app finds loops through IngestFolder's path map; a damaged key file is a clear error naming no path."""
    keys = tmp_path / "keys"
    shutil.copytree(outputs["data"] / "ingest" / "LOCAL_KEYS_DO_NOT_SHARE", keys)
    cfg = store.AppConfig(data=(outputs["data"],), dicom_roots=(outputs["dicom"],), keys_dir=keys)
    videos = store.read_videos([outputs["data"] / "ingest"])
    key = videos["video_key"].iloc[0]
    assert store.dicom_file(cfg, outputs["data"] / "ingest", key).is_file()
    (keys / "paths.jsonl").write_text('{"file_key": "f_x", "pa\n')
    with pytest.raises(MedvidError, match="key file is unreadable") as err:
        store.dicom_file(cfg, outputs["data"] / "ingest", key)
    assert str(keys) not in str(err.value) and "paths.jsonl" not in str(err.value)

def test_surgical_page(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"])
    at = run_page("pages/3_Surgical_video.py")
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    text = page_text(at)
    assert "Phase ribbon" in text and "ground truth" in text
    assert "Tool presence" in text and "Probability per phase" in text
    assert "strict" in text and "relaxed" in text
    assert '.mp4"' in text and "start_time" not in text  # the player, at 0 s
    at.slider(key="surg_time").set_value(5.0).run()
    no_exception(at)
    assert "start_time: 5" in page_text(at)
    assert any(s.value == "Top phases at 5.0 s" for s in at.subheader)


def test_surgical_page_missing_video_and_broken_csv(outputs, monkeypatch, tmp_path):
    zs = tmp_path / "zs"
    shutil.copytree(outputs["data"] / "surgery" / "zero_shot_phase", zs)
    app_env(monkeypatch, zs)  # no Cholec80 root among the data roots: charts without the player
    at = run_page("pages/3_Surgical_video.py")
    no_exception(at)
    assert any("video file was not found" in i.value for i in at.info)
    assert "Phase ribbon" in page_text(at)
    (zs / "predictions" / "video01.csv").write_text("garbage,\n\x00\x01")
    (zs / "metrics.json").write_text("{not json")
    at = run_page("pages/3_Surgical_video.py")
    no_exception(at)
    assert at.error and not any("Traceback" in e.value for e in at.error)


def test_no_phi_in_any_page(outputs, monkeypatch, tmp_path):
    app_env(monkeypatch, outputs["data"], outputs["dicom"], cache=tmp_path / "cache")
    seen = []
    for page, query in ((None, {}), ("pages/1_Echo_studies.py", {}), ("pages/3_Surgical_video.py", {}),
                        *[("pages/2_Study.py", {"study": k}) for k in
                          [*outputs["drafted"], outputs["failed"], *outputs["undrafted"]]]):
        at = run_page(page, query)
        no_exception(at)
        seen.append(page_text(at))
    text = "\n".join(seen)
    assert outputs["phi"]
    for value in outputs["phi"]:
        assert value not in text, value
    assert str(outputs["dicom"]) not in text and "LOCAL_KEYS_DO_NOT_SHARE" not in text


def test_app_job_refuses_non_local_bind_without_flag(tmp_path, monkeypatch, capsys):
    from medvid.errors import MedvidError
    from medvid.pipelines import app as job

    with pytest.raises(MedvidError, match="allow_remote"):
        job.run(load_config(job.Config, "app", overrides=[f"data=[{tmp_path}]", "address=0.0.0.0"]))
    with pytest.raises(MedvidError, match="not a folder"):
        job.run(load_config(job.Config, "app", overrides=[f"data=[{tmp_path / 'nope'}]"]))
    calls = []
    monkeypatch.setattr(job, "serve", lambda cmd, env: calls.append((cmd, env)) or (0, None))
    job.run(load_config(job.Config, "app", overrides=[f"data=[{tmp_path}]", "port=8599"]))
    cmd, env = calls[0]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and "8599" in cmd
    assert store.AppConfig.from_env(env).data == (tmp_path.resolve(),)
    hosts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--server.allowedHosts"]  # DNS rebinding, by construction
    assert hosts == ["localhost", "127.0.0.1", "::1"]
    token = env[access.TOKEN_ENV]
    assert len(token) >= 40 and token not in " ".join(cmd)  # never on the command line (ps shows it)
    assert f"http://127.0.0.1:8599/?token={token}" in capsys.readouterr().err
    job.run(load_config(job.Config, "app", overrides=[f"data=[{tmp_path}]", "address=0.0.0.0", "allow_remote=true",
                                                      "hosts=[review.example.org]"]))
    cmd, env = calls[1]
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--server.allowedHosts"][-1] == "review.example.org"
    assert "review.example.org" in store.AppConfig.from_env(env).hosts and env[access.TOKEN_ENV] != token
    assert "WARNING" in capsys.readouterr().err


@pytest.mark.slow
def test_real_medvid_draft_output_reviews(tmp_path, monkeypatch):
    """A real `medvid draft` output (tiny random models, built with the draft tests' helpers) lists,
    opens with its loops, signs off and exports."""
    from medvid.synth.echo import synthesize
    from medvid.pipelines import draft as job
    from draft_testdata import build_bank, draft_cfg, tiny_models

    synthesize(tmp_path / "synth", studies=6, seed=3, loops_per_study=3, rows=64, cols=80, frames_range=(8, 12),
               still_fraction=0.0, split_fractions=(0.5, 0.25, 0.25))
    ingest_synth(tmp_path / "synth", tmp_path / "ingest")
    model, views = tiny_models(tmp_path)
    build_bank(tmp_path, model, views, tmp_path / "bank", "split=train")
    world = {"model": model, "views": views, "bank": tmp_path / "bank", "ingest": tmp_path / "ingest",
             "dicom": tmp_path / "synth" / "dicom"}
    job.run(draft_cfg(world, tmp_path / "drafts_out"))
    app_env(monkeypatch, tmp_path, tmp_path / "synth" / "dicom")
    at = run_page("pages/1_Echo_studies.py")
    no_exception(at)
    assert not at.error and not at.warning
    key = json.loads((tmp_path / "drafts_out" / "drafts.jsonl").read_text().splitlines()[0])["study_key"]
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    assert not at.error and not at.warning and len(at.get("video")) == 3 and len(at.text_area) > 3
    at.text_input(key="reviewer").set_value("Reviewer^Test").run()
    at.button(key="sign_off").click().run()
    at.button(key="export").click().run()
    no_exception(at)
    assert sorted(p.name for p in (tmp_path / "drafts_out" / "reviewed").iterdir()) == [
        "audit.jsonl", f"{key}.json", f"{key}.v1.json", f"{key}.v1.sr.dcm", f"{key}.v1.txt"]


@pytest.mark.slow
def test_sixty_loop_study_opens_fast_on_the_second_visit(tmp_path, monkeypatch):
    """The issue's bar: a 60-loop study opens in under 5 s once its loops are in the on-disk cache."""
    import time

    from medvid.synth.echo import synthesize

    synthesize(tmp_path / "synth", studies=9, seed=1, loops_per_study=10, rows=128, cols=160, frames_range=(32, 48),
               still_fraction=0.0, format_weights={"jpeg_ybr": 1.0})
    ingest_synth(tmp_path / "synth", tmp_path / "data" / "ingest", "validate_decode=false")
    path = tmp_path / "data" / "ingest" / "videos.parquet"
    videos = pd.read_parquet(path)
    keys = sorted(videos["study_key"].unique())
    videos["study_key"] = videos["study_key"].where(~videos["study_key"].isin(keys[:6]), keys[0])  # one 60-loop study
    videos.to_parquet(path, index=False)
    write_drafts(tmp_path / "data" / "ingest", tmp_path / "data" / "draft_out")
    app_env(monkeypatch, tmp_path / "data", tmp_path / "synth" / "dicom")
    first = run_page("pages/2_Study.py", {"study": keys[0]}, timeout=600)
    assert len(first.get("video")) == 60
    t0 = time.perf_counter()
    second = run_page("pages/2_Study.py", {"study": keys[0]})
    assert time.perf_counter() - t0 < 5.0 and len(second.get("video")) == 60


# --------------------------------------------------------------------------- worklist flow (issue 26)


def test_negation_aware_finding_search_and_calls_as_calls():
    assert store.finding_matches("Small pericardial effusion.", "effusion")
    for negated in ("No pericardial effusion.", "Pericardial effusion is absent.", "There is no evidence of effusion",
                    "Without effusion; normal LV."):
        assert not store.finding_matches(negated, "effusion"), negated
    assert store.finding_matches("No mitral regurgitation, but a small effusion.", "effusion")
    assert store.finding_matches("No MR. Moderate pericardial  effusion.", "pericardial effusion")
    assert store.phenotype_call({"kind": "binary", "score": 0.15, "threshold": 0.10}) == "positive (0.15 ≥ 0.10)"
    assert store.phenotype_call({"kind": "binary", "score": 0.05, "threshold": 0.10}) == "negative (0.05 < 0.10)"
    assert store.phenotype_call({"kind": "numeric", "value": 61.835}) == "62 (estimate)"
    assert store.phenotype_call({"kind": "numeric", "value": 1.34, "spread": 0.21}) == "1.3 ± 0.2 (estimate)"
    assert store.phenotype_call({"kind": "binary", "score": None, "threshold": 0.5}) == "—"
    assert store.loop_names({"a": "A4C", "b": "PLAX", "c": "A4C"}) == {"a": "A4C 1", "b": "PLAX", "c": "A4C 2"}


def test_review_diff_is_one_line_per_change():
    diff = reviews.unified_diff("No mitral regurgitation.", "Mild mitral regurgitation.", "Mitral Valve")
    assert diff.splitlines() == ["--- draft/Mitral Valve", "+++ reviewed/Mitral Valve", "@@ -1 +1 @@",
                                 "-No mitral regurgitation.", "+Mild mitral regurgitation."]
    assert diff.endswith("\n") and reviews.unified_diff("same", "same", "x") == ""


def test_worklist_orders_by_priority_then_age_with_calls_and_negation_aware_search(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    low, high, foreign = outputs["low_ef"], outputs["high_ef"], outputs["foreign"]
    drafts = data / "draft_out" / "drafts.jsonl"

    def conflicted(row):  # the draft's text contradicts a call: read it first
        row["sections"]["Mitral Valve"]["conflict"] = {"phenotype": "mr", "phenotypes": ["mr"], "call": 1,
                                                       "text_finding": 0, "alternative": "Mild mitral regurgitation."}
        row["sections"]["Mitral Valve"]["text"] = "No pericardial effusion. No mitral regurgitation."

    def older(row):
        row["provenance"]["created"] = "2026-11-01T08:00:00+00:00"
        row["sections"]["Aortic Valve"]["text"] = "Small pericardial effusion."

    edit_draft(drafts, foreign, conflicted)
    edit_draft(drafts, high, older)
    app_env(monkeypatch, data)
    at = run_page("pages/1_Echo_studies.py")
    no_exception(at)
    listed = shown_list(at)
    assert listed["study"].tolist() == [foreign, high, low]  # priority flag, then the oldest draft
    assert listed["flags"].tolist() == ["conflict", "", ""]
    assert listed.set_index("study").loc[low, "reduced_ef"] == "positive (0.80 ≥ 0.42)"  # a call, not "0.8"
    assert listed.set_index("study").loc[high, "ef"] == "55 (estimate)"
    assert "**3** draft" in page_text(at) and "**1** error" in page_text(at)  # status counts
    at.text_input(key="list_query").set_value("effusion").run()  # "No pericardial effusion" is no match
    assert shown_list(at)["study"].tolist() == [high]
    assert at.query_params["q"] in ("effusion", ["effusion"])
    at = run_page("pages/2_Study.py", {"study": foreign})
    no_exception(at)
    assert any("Conflict" in w.value and "mr" in w.value for w in at.warning)
    assert "Mild mitral regurgitation." in [t.value for t in at.text]  # the agreeing alternative, as plain text
    calls = shown_table(at, "call or estimate")
    assert "75 (estimate)" in calls["call or estimate"].tolist()


def shown_list(at) -> pd.DataFrame:
    """The worklist table of the list page, cells unescaped, links reduced to their key."""
    [md] = [m.value for m in at.markdown if m.value.startswith("| study")]
    lines = [line.strip("| ").split(" | ") for line in md.splitlines() if not line.startswith("|---")]
    df = pd.DataFrame(lines[1:], columns=[re.sub(r"\\(.)", r"\1", c) for c in lines[0]])
    df = df.map(lambda v: re.sub(r"\\(.)", r"\1", v))
    df["study"] = df["study"].str.extract(r"^\[([^\]]+)\]", expand=False)
    return df


def test_list_filters_and_reviewer_survive_a_reload(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    at = run_page("pages/1_Echo_studies.py")
    at.multiselect(key="list_status").set_value(["draft"]).run()
    at.selectbox(key="list_pheno").set_value("ef").run()
    at.number_input(key="list_value").set_value(50.0).run()
    params = {k: v for k, v in at.query_params.items() if k != "token"}
    params = {k: v[0] if isinstance(v, list) else v for k, v in params.items()}
    assert params == {"status": "draft", "pheno": "ef", "op": "<", "value": "50.0"}
    reloaded = run_page("pages/1_Echo_studies.py", params)  # a reload: a new session, the same address
    assert reloaded.selectbox(key="list_pheno").value == "ef" and reloaded.number_input(key="list_value").value == 50
    assert shown_list(reloaded)["study"].tolist() == [outputs["low_ef"]]
    study = run_page("pages/2_Study.py", {**params, "study": outputs["low_ef"]})  # next/previous follow that list
    assert study.button(key="nav_next").disabled and study.button(key="nav_prev").disabled
    study.text_input(key="reviewer").set_value("Dr Reload").run()
    kept = {k: v[0] if isinstance(v, list) else v for k, v in study.query_params.items()}
    assert kept["reviewer"] == "Dr Reload"
    again = run_page("pages/2_Study.py", {k: v for k, v in kept.items() if k != "token"})
    assert again.text_input(key="reviewer").value == "Dr Reload"


def test_sign_off_and_next_and_a_save_without_edits_writes_nothing(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    app_env(monkeypatch, data)
    reviewed = data / "draft_out" / "reviewed"
    table = store.read_drafts([data / "draft_out"])
    order = store.worklist(store.study_table(store.read_videos([data / "ingest"]), table, {}), table)
    order = order[order["study"].isin(set(table.drafts))]["study"].tolist()
    at = open_tab(order[0], "Dr Next")
    at.button(key="save").click().run()  # nothing changed: the study stays a draft
    no_exception(at)
    assert not reviewed.exists() and "Status:** draft" in page_text(at)
    assert any("no section was changed" in t.value for t in at.toast)
    at.button(key="sign_next").click().run()
    no_exception(at)
    assert json.loads((reviewed / f"{order[0]}.json").read_text())["status"] == "signed_off"
    assert at.session_state["study"] == order[1]  # the next study of the worklist is open
    assert f"Study 2 of {len(order)}" in [c.value for c in at.caption]  # signing did not reorder this tab's list
    assert any(f"Signed off study {order[0]}" in t.value for t in at.toast)  # seen wherever the page was scrolled
    assert at.text_area[0].value.startswith("Left Ventricle text of draft")
    assert not any(a.disabled for a in at.text_area)


def test_attention_table_names_loops_by_view(outputs, monkeypatch):
    app_env(monkeypatch, outputs["data"])
    key = outputs["low_ef"]
    at = run_page("pages/2_Study.py", {"study": key})
    no_exception(at)
    [weights] = [d.value for d in at.dataframe]
    views = {v["video_key"]: v["view"] for v in store.read_drafts([outputs["data"] / "draft_out"]).drafts[key]
             .data["videos"]}
    assert sorted(weights.index) == sorted(store.loop_names(views).values())
    assert not any(str(i).startswith("vi_") for i in weights.index)


def test_viewer_page_is_self_contained_and_syncs_by_cardiac_cycle():
    from medvid.apps import viewer

    hostile = "</script><img src=x onerror=alert(1)>"
    a = viewer.Clip("A4C 1", b"\x00mp4-a", 30.0, 40, (0.1, 0.9, 1.7))
    b = viewer.Clip(hostile, b"\x00mp4-b", 50.0, 60, (0.2, 1.0))
    page = viewer.player_html([a, b])
    assert '"sync": "r_wave"' in page and "data:video/mp4;base64,AG1wNC1h" in page
    assert hostile not in page and "onerror=alert" in page  # names only as escaped JSON, set as textContent
    assert "http" not in page.replace("data:video/mp4", "")  # no network, no CDN
    assert viewer.cycle_sync(a, viewer.Clip("x", b"", 30.0, 10)) == "loop"
    assert '"sync": null' in viewer.player_html([a])
    with pytest.raises(ValueError):
        viewer.player_html([])


def test_study_page_main_viewer_beside_another_study_of_the_patient(outputs, monkeypatch, tmp_path):
    data = copy_outputs(outputs, tmp_path / "data")
    low, high = outputs["low_ef"], outputs["high_ef"]
    path = data / "ingest" / "videos.parquet"
    videos = pd.read_parquet(path)
    videos.loc[videos["study_key"] == high, "patient_key"] = videos.loc[videos["study_key"] == low, "patient_key"].iloc[0]
    videos["r_wave_times_s"] = [[0.05, 0.45, 0.85]] * len(videos)
    videos.to_parquet(path, index=False)
    app_env(monkeypatch, data, outputs["dicom"], cache=tmp_path / "data" / "cache")
    at = run_page("pages/2_Study.py", {"study": low})
    no_exception(at)
    assert "Other studies of this patient" in [s.value for s in at.subheader]
    assert any(e.label == f"Study {high} (draft)" for e in at.expander)
    assert "Left Ventricle text of draft 1. LVEF 55%." in [t.value for t in at.text]  # its report, by section
    text = page_text(at)
    assert text.count("data:video/mp4;base64,") == 1 and re.search(r'sync\\*": null', text)  # one loop, large
    main = at.selectbox(key=f"main::{low}")
    view = store.loop_names({k: v for k, v in zip(videos["video_key"], videos["view"])
                             if k in set(videos.loc[videos["study_key"] == low, "video_key"])})[main.value]
    compare = at.selectbox(key=f"cmp::{low}")
    prior = [o for o in compare.options if o.endswith(f"of study {high}")]
    assert prior and all(o.startswith(view.rsplit(" ", 1)[0]) for o in prior)  # the same view, of the other study
    compare.set_value(next(k for k in videos.loc[videos["study_key"] == high, "video_key"]
                           if compare.format_func(k) == prior[0])).run()
    no_exception(at)
    text = page_text(at)
    assert text.count("data:video/mp4;base64,") == 2 and re.search(r'sync\\*": \\*"r_wave', text)  # by cycle
