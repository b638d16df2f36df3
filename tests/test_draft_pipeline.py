"""`medvid bank build` / `bank calibrate` / `medvid draft` end to end on a small synthetic export with tiny
random models: contract outputs, SR, kill-and-resume, a corrupt study, shards, settings and model checks,
loops read from a ``medvid pretrain`` feature cache.

About 30 s on an idle 2-core machine (the module's world: a small synthetic export, its ingest, two
tiny models and a bank, built once). This file doubles as the worker script of the kill test
(``python tests/test_draft_pipeline.py ...``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medvid.config import load_config
from medvid.errors import MedvidError
from medvid.utils import read_jsonl
from draft_testdata import TINY_VIDEO_TEXT, build_bank, draft_cfg, tiny_models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from echo_testdata import ingest_synth
    from medvid.synth.echo import synthesize

    root = tmp_path_factory.mktemp("draftworld")
    synthesize(root / "synth", studies=8, seed=3, loops_per_study=3, rows=64, cols=80, frames_range=(8, 12),
               still_fraction=0.0, split_fractions=(0.5, 0.25, 0.25))
    ingest_synth(root / "synth", root / "ingest")
    model, views = tiny_models(root)
    bank = root / "bank"
    summary = build_bank(root, model, views, bank, "split=train")
    return {"root": root, "model": model, "views": views, "bank": bank, "dicom": root / "synth" / "dicom",
            "ingest": root / "ingest", "bank_summary": summary}


def _draft(w: dict, out: Path, *extra: str) -> dict:
    from medvid.pipelines import draft as job

    return job.run(draft_cfg(w, out, *extra))


def test_bank_build_and_contract_outputs(world, tmp_path):
    from medvid.report.bank import Bank
    from medvid.report.sr import read_report_sr

    bank = Bank(world["bank"])
    assert bank.manifest["kind"] == "video" and bank.rows == world["bank_summary"]["rows"] > 0
    assert set(bank.phenotypes) >= {"ef", "reduced_ef"} and bank.phenotypes["ef"] == "numeric"
    summary = _draft(world, tmp_path / "out", "split=''")
    assert summary["drafts_total"] == 8 and summary["errors_total"] == 0
    rows = read_jsonl(tmp_path / "out" / "drafts.jsonl")
    assert len({r["study_key"] for r in rows}) == 8
    for r in rows:
        assert r["status"] == "draft" and r["study_key"].startswith("st_")
        for name, sec in r["sections"].items():
            assert sec["text"] and sec["neighbours"]
            assert abs(sum(v["weight"] for v in sec["videos"]) - 1) < 1e-3
        assert r["phenotypes"]["reduced_ef"]["call"] in (0, 1) and r["phenotypes"]["ef"]["value"] is not None
        assert {v["view_source"] for v in r["videos"]} == {"known"}
        assert (tmp_path / "out" / r["text_path"]).read_text().startswith("DRAFT")
        sections, measurements = read_report_sr(tmp_path / "out" / r["sr_path"])
        assert sections == {n: s["text"] for n, s in r["sections"].items()}
        assert measurements["ef"] == round(r["phenotypes"]["ef"]["value"])  # an estimate, to a whole percent
    assert (tmp_path / "out" / "errors.jsonl").read_text() == ""


def test_dicom_folder_input_is_ingested_into_out(world, tmp_path):
    from medvid.pipelines import draft as job

    cfg = draft_cfg(world, tmp_path / "out", "split=''")
    cfg.input, cfg.dicom_root = str(world["dicom"]), ""
    summary = job.run(cfg)
    assert summary["drafts_total"] == 8 and (tmp_path / "out" / "ingest" / "videos.parquet").is_file()
    rows = read_jsonl(tmp_path / "out" / "drafts.jsonl")
    assert all(v["view_source"] == "classifier" for r in rows for v in r["videos"])  # no views.csv given


def test_classifier_views_and_zero_shot_findings(world, tmp_path):
    import shutil

    ingest = tmp_path / "ingest"
    shutil.copytree(world["ingest"], ingest)
    import pandas as pd

    videos = pd.read_parquet(ingest / "videos.parquet")
    videos["view"] = ""
    videos.to_parquet(ingest / "videos.parquet", index=False)
    _draft({**world, "ingest": ingest}, tmp_path / "out", "split=test",
           f"findings={REPO / 'configs' / 'prompts' / 'echo_findings.yaml'}")
    rows = read_jsonl(tmp_path / "out" / "drafts.jsonl")
    assert rows and all(v["view_source"] == "classifier" and 0 < v["view_confidence"] <= 1
                        for r in rows for v in r["videos"])
    findings = rows[0]["findings"]
    assert findings["ejection_fraction"]["method"] == "zero_shot" and 5 <= findings["ejection_fraction"]["value"] <= 80
    assert 0 <= findings["pericardial_effusion"]["score"] <= 1


def test_bank_of_another_model_is_refused(world, tmp_path):
    from medvid.models.factory import create_model

    other = create_model(TINY_VIDEO_TEXT).save_pretrained(tmp_path / "other")  # other random weights
    with pytest.raises(MedvidError, match="built with model"):
        _draft({**world, "model": other}, tmp_path / "out")


def test_drafts_from_a_pretrain_feature_cache_equal_decoded_drafts(world, tmp_path):
    """``encoding.feature_cache=`` the frame-feature cache ``medvid pretrain`` (frozen backbone) built from the
    model's backbone: loops come from it without decoding (an empty DICOM root), the drafts match those from
    decoded loops up to the cache's float16 rounding, and a cache of other sampling is refused by name."""
    from medvid.pipelines import pretrain

    pretrain.run(load_config(pretrain.Config, "echo_pretrain", None, [
        f"init_from={world['model']}", f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
        f"echo.ingest_dir={world['ingest']}", f"echo.dicom_root={world['dicom']}", "train.max_steps=1",
        "train.batch_size=2", "train.progress=false", "train.device=cpu"]))
    cache = tmp_path / "cache" / "echo"
    (tmp_path / "no_dicom").mkdir()
    _draft(world, tmp_path / "decoded", "split=''", "encoding.precision=fp32")
    summary = _draft({**world, "dicom": tmp_path / "no_dicom"}, tmp_path / "cached", "split=''",
                     "encoding.precision=fp32", f"encoding.feature_cache={cache}")
    assert summary["drafts_total"] == 8 and summary["errors_total"] == 0
    decoded, cached = (read_jsonl(tmp_path / out / "drafts.jsonl") for out in ("decoded", "cached"))
    assert [r["study_key"] for r in cached] == [r["study_key"] for r in decoded]
    compared = 0
    for a, b in zip(decoded, cached):
        assert [(v["video_key"], v["view"], v["view_source"]) for v in a["videos"]] == \
               [(v["video_key"], v["view"], v["view_source"]) for v in b["videos"]]
        assert a["sections"].keys() == b["sections"].keys()
        for name, sec in a["sections"].items():
            other = b["sections"][name]
            sims = {n["study_key"]: n["similarity"] for n in sec["neighbours"]}
            for n in other["neighbours"]:  # float16 features move a similarity by ~1e-4; a study's spread is ~1e-2
                assert n["similarity"] == pytest.approx(sims.get(n["study_key"], n["similarity"]), abs=5e-4)
            top = sorted(sims.values(), reverse=True)
            if len(top) < 2 or top[0] - top[1] > 2e-3:  # no near-tie for the nearest report: the same text
                assert other["text"] == sec["text"]
                compared += 1
        for key, p in a["phenotypes"].items():
            q = b["phenotypes"][key]
            if p["kind"] == "numeric":
                assert q["value"] == pytest.approx(p["value"], abs=0.05)
            else:
                assert q["score"] == pytest.approx(p["score"], abs=5e-3)
                assert q["call"] == p["call"] or abs(p["score"] - p["threshold"]) < 5e-3
    assert compared >= 8  # the text check was not vacuous
    with pytest.raises(MedvidError, match=r"feature cache built with other settings \(mask, n_frames\)"):
        _draft(world, tmp_path / "other", "split=''", "encoding.n_frames=6", "encoding.mask=box",
               f"encoding.feature_cache={cache}")


def test_resume_with_other_settings_is_refused(world, tmp_path):
    _draft(world, tmp_path / "out", "split=test")
    with pytest.raises(MedvidError, match="drafting.knn_k"):
        _draft(world, tmp_path / "out", "split=test", "drafting.knn_k=3")


def test_bad_loops_leave_a_study_out_only_when_none_is_readable(world, tmp_path):
    """A study with one truncated loop is drafted from the others and says which loop was left out (record,
    text, SR); a study with every loop truncated is an errors.jsonl record; the batch goes on."""
    import shutil

    import highdicom as hd
    import pandas as pd

    from medvid.io.ingest_folder import IngestFolder

    dicom = tmp_path / "dicom"
    shutil.copytree(world["dicom"], dicom)
    videos = pd.read_parquet(world["ingest"] / "videos.parquet")
    partial, dead = sorted(set(videos["study_key"]))[:2]
    paths = IngestFolder(world["ingest"]).video_paths()
    bad = [videos.loc[videos["study_key"] == partial, "video_key"].iloc[0],
           *videos.loc[videos["study_key"] == dead, "video_key"]]
    for video_key in bad:  # truncated after ingest
        (dicom / paths[video_key]).write_bytes((dicom / paths[video_key]).read_bytes()[:2000])
    summary = _draft({**world, "dicom": dicom}, tmp_path / "out", "split=''")
    assert summary["drafts_total"] == 7 and summary["errors_total"] == 3
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert {e["study_key"] for e in errors} == {dead} and {e["video_key"] for e in errors} == set(bad[1:])
    assert all(str(dicom) not in json.dumps(e) and "/" not in e["detail"] for e in errors)
    drafts = {r["study_key"]: r for r in read_jsonl(tmp_path / "out" / "drafts.jsonl")}
    assert dead not in drafts and all(not r["left_out"] for k, r in drafts.items() if k != partial)
    record = drafts[partial]
    [left] = record["left_out"]
    assert left["video_key"] == bad[0] and left["reason"] and str(dicom) not in json.dumps(left)
    assert bad[0] not in {v["video_key"] for v in record["videos"]} and len(record["videos"]) == 2
    assert f"{bad[0]} ({left['reason']})" in (tmp_path / "out" / record["text_path"]).read_text()
    sr = hd.sr.srread(tmp_path / "out" / record["sr_path"])
    assert any(bad[0] in i.value for i in sr.ContentSequence if i.ValueType == "TEXT")


def test_shards_partition_the_studies(world, tmp_path):
    out = tmp_path / "out"
    got = [_draft(world, out, "split=''", f"shard={k}/3")["studies"] for k in (1, 2, 3)]
    assert sum(got) == 8
    rows = read_jsonl(out / "drafts.jsonl")
    assert len(rows) == 8 and len({r["study_key"] for r in rows}) == 8


def test_calibrate_stores_thresholds(world, tmp_path, monkeypatch):
    import shutil

    from medvid.report.bank import Bank
    from medvid.pipelines import bank as job

    bank = tmp_path / "bank"
    shutil.copytree(world["bank"], bank)
    monkeypatch.setattr("medvid.report.calibrate.MIN_PER_CLASS", 1)  # 8 studies: below the documented minimum
    summary = job.run(load_config(job.Config, "bank", None, [
        "action=calibrate", f"bank={bank}", f"input={world['ingest']}", f"dicom_root={world['dicom']}", "split=''",
        "progress=false", "encoding.num_workers=0"]))
    thresholds = Bank(bank).thresholds
    assert thresholds == summary["thresholds"] and thresholds
    assert all(0 <= v <= 1 for v in thresholds.values())
    assert Bank(bank).manifest["calibration"]["method"] == "youden"


def test_kill_and_resume_drafts_every_study_once(world, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, __file__, str(world["root"]), str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "DRAFT_SLOW": "0.4"})
    done = out / ".draft_state" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_dir() and len(list(done.glob("*.json"))) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(done.glob("*.json")))
    assert 2 <= finished < 8, "the kill must land mid-batch"
    summary = _draft(world, out, "split=''")
    assert summary["drafted_now"] == 8 - finished
    keys = [r["study_key"] for r in read_jsonl(out / "drafts.jsonl")]
    assert len(keys) == 8 and len(set(keys)) == 8


def test_ctrl_c_keeps_streamed_drafts_and_resume_equals_an_uninterrupted_run(world, tmp_path):
    """Each study's drafts.jsonl line is appended as it finishes (the app sees drafts mid-run); SIGINT exits
    130 saying what was kept and how to resume; the resumed folder equals an uninterrupted run's."""
    out, same = tmp_path / "out", ("split=''", "batch_studies=1", "encoding.loop_batch=3")  # batches as the worker's
    proc = subprocess.Popen([sys.executable, __file__, str(world["root"]), str(out), "encoding.loop_batch=3"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DRAFT_SLOW": "0.4"})
    done = out / ".draft_state" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_dir() and len(list(done.glob("*.json"))) >= 2):
        time.sleep(0.05)
    streamed = read_jsonl(out / "drafts.jsonl") if (out / "drafts.jsonl").is_file() else []
    assert len(streamed) >= 2, "finished studies reach drafts.jsonl while the run goes on"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    finished = len(list(done.glob("*.json")))
    assert proc.returncode == 130 and 2 <= finished < 8
    assert "interrupted" in err and "run the same command again to resume" in err and f"{finished} of 8" in err
    assert [r["study_key"] for r in read_jsonl(out / "drafts.jsonl")] == sorted(p.stem for p in done.glob("*.json"))
    assert _draft(world, out, *same)["drafted_now"] == 8 - finished
    _draft(world, tmp_path / "whole", *same)

    def contents(folder: Path) -> list:
        rows = read_jsonl(folder / "drafts.jsonl")
        for r in rows:
            del r["provenance"]["created"]
        return rows

    assert contents(out) == contents(tmp_path / "whole") and len(contents(out)) == 8
    assert (out / "drafts.jsonl").read_text().count("\n") == 8
    for name in sorted(p.name for p in (tmp_path / "whole" / "drafts").glob("*.txt")):
        assert (out / "drafts" / name).read_text() == (tmp_path / "whole" / "drafts" / name).read_text()


@pytest.mark.slow
def test_imported_echoprime_builds_a_bank_and_drafts(tmp_path):
    """``medvid import echoprime`` / ``echoprime-view`` (random weights saved in the publishers' layout) ->
    ``bank build`` -> ``draft``: loops are fed as the recorded contract says (16 frames every 2nd, 224²,
    bicubic, zeros after a short loop; the view classifier its first frame), sections come through the
    shipped section x view table (EchoPrime's is static). ~2-4 min on 2 cores (mViT-v2-S at 16 x 224²)."""
    from echo_testdata import ingest
    from medvid.pipelines import bank as bank_job, draft as job
    from medvid.report.encode import Encoding, load_encoder, loop_clips
    from medvid.synth.echo import synthesize
    from model_testdata import import_tiny_echoprime

    synth = tmp_path / "synth"
    synthesize(synth, studies=3, seed=4, loops_per_study=1, rows=64, cols=80, frames_range=(20, 40),
               still_fraction=0.0)
    ingest(synth / "dicom", tmp_path / "ingest", f"reports={synth / 'reports.csv'}", f"labels={synth / 'labels.csv'}")
    model, views = import_tiny_echoprime(tmp_path)

    encoder = load_encoder(str(model), str(views), torch.device("cpu"))
    assert encoder.path == "clips" and encoder.needs_view_clips and encoder.embed_dim == 512
    loops, _ = loop_clips(encoder, tmp_path / "ingest", synth / "dicom", ["none"], Encoding())
    s = loops.clips.sampling
    assert (s.num_frames, s.frame_stride, s.short_clip) == (16, 2, "zero_pad_after_norm")
    assert loops.view_clips.sampling.num_frames == 1

    common = [f"model={model}", f"views={views}", f"dicom_root={synth / 'dicom'}", "progress=false",
              "encoding.num_workers=0", "split=''"]
    built = bank_job.run(load_config(bank_job.Config, "bank", None, [
        "action=build", f"input={tmp_path / 'ingest'}", f"bank={tmp_path / 'bank'}", "min_patients=1", *common]))
    assert built["studies_embedded"] == 3 and built["rows"] > 0
    summary = job.run(load_config(job.Config, "draft", None, [
        f"input={tmp_path / 'ingest'}", f"bank={tmp_path / 'bank'}", f"out={tmp_path / 'out'}", *common]))
    assert summary["drafts_total"] == 3 and summary["errors_total"] == 0
    for row in read_jsonl(tmp_path / "out" / "drafts.jsonl"):
        assert row["sections"] and all(sec["text"] for sec in row["sections"].values())
        assert {v["view_source"] for v in row["videos"]} == {"classifier"}
        assert row["provenance"]["model"]["name"] == "echoprime"
    with pytest.raises(MedvidError, match="no text encoder: import it with text_encoder="):
        job.run(load_config(job.Config, "draft", None, [
            f"input={tmp_path / 'ingest'}", f"bank={tmp_path / 'bank'}", f"out={tmp_path / 'out2'}",
            f"findings={REPO / 'configs' / 'prompts' / 'echo_findings.yaml'}", *common]))


def _worker(root: str, out: str, *extra: str) -> None:
    """``medvid draft`` (the CLI) drafting slowly (one study per bank batch, a pause per write) so the test can
    kill or interrupt it mid-batch."""
    from medvid.cli import app
    from medvid.report.drafts_folder import DraftsFolder

    slow = float(os.environ.get("DRAFT_SLOW", "0"))
    write = DraftsFolder.write_study

    def slow_write(*a, **k):
        write(*a, **k)
        time.sleep(slow)

    DraftsFolder.write_study = slow_write
    r = Path(root)
    app(["draft", str(r / "ingest"), "--model", str(r / "model"), "--views", str(r / "views"), "--bank",
         str(r / "bank"), "--out", out, f"dicom_root={r / 'synth' / 'dicom'}", "split=''", "progress=false",
         "encoding.num_workers=0", "batch_studies=1", *extra])


if __name__ == "__main__":
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also under a background runner
    _worker(*sys.argv[1:])
