"""The zero-shot job end to end on synthetic Cholec80-layout videos (FFmpeg/libx264-encoded) with a
small checkpoint written by ``save_pretrained``: predictions, resume, metrics, plots, report."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medvid.cli import app
from medvid.config import config_dir, load_config
from medvid.datasets.cholec80 import Cholec80
from medvid.errors import MedvidError
from medvid.metrics import relaxed_phase_metrics, strict_phase_metrics, tool_average_precision
from medvid.vocab import CHOLEC80_PHASES, CHOLEC80_TOOLS
from medvid.pipelines import synth_surgery, zero_shot


@pytest.fixture(scope="session")
def surgery_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("surgery")
    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", overrides=[
        f"out={out}", "videos=2", "seed=3", "duration_scale=0.6", "height=128", "width=160"]))
    return out


def _cfg(root, model, out, *overrides):
    return load_config(zero_shot.Config, "zero_shot", overrides=[
        f"data_root={root}", f"model={model}", f"out={out}", *overrides])


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def phase_run(surgery_root, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs_phase")
    summary = zero_shot.run(_cfg(surgery_root, tiny_model(), out, "smoothing=hmm"))
    return out, summary


def test_phase_job_writes_predictions_metrics_plots_report(phase_run, surgery_root):
    out, summary = phase_run
    assert summary["videos_done"] == 2 and summary["videos_failed"] == 0
    ds = Cholec80(surgery_root)
    pairs = []
    for name in ds.videos():
        rows = _rows(out / "predictions" / f"{name}.csv")
        times = np.array([float(r["time_s"]) for r in rows])
        np.testing.assert_allclose(times, np.arange(len(rows)))  # 1 fps from t = 0
        with ds.open(name) as v:
            assert len(rows) == int(np.floor(v.duration)) + 1  # every second from 0 within the video
            assert [int(r["frame"]) for r in rows] == v.indices_at(times).tolist()
        probs = np.array([[float(r[f"p_{c}"]) for c in CHOLEC80_PHASES] for r in rows])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
        assert [r["pred"] for r in rows] == [CHOLEC80_PHASES[i] for i in probs.argmax(1)]
        gt = ds.phases_at(name, times)  # ground truth read independently of the job
        assert [int(r["gt_index"]) for r in rows] == gt.tolist()
        keep = gt >= 0
        pairs.append((gt[keep], probs.argmax(1)[keep]))

    metrics = json.loads((out / "metrics.json").read_text())
    raw = metrics["results"]["raw"]
    assert "strict" in raw["strict"]["protocol"] and "relaxed" in raw["relaxed"]["protocol"]
    assert raw["strict"]["accuracy"] == pytest.approx(strict_phase_metrics(pairs)["accuracy"])
    assert raw["strict"]["macro_f1"] == pytest.approx(strict_phase_metrics(pairs)["macro_f1"])
    assert raw["relaxed"]["jaccard"] == pytest.approx(relaxed_phase_metrics(pairs)["jaccard"])
    # smoothing reported separately, and the prompt-only scores before self-training
    assert set(metrics["results"]) == {"raw", "smoothed_hmm", "prompts_only"}
    prompt_pairs = []
    for name, (gt, _) in zip(ds.videos(), pairs):
        rows = _rows(out / "predictions" / f"{name}.csv")
        p0 = np.array([[float(r[f"prompt_p_{c}"]) for c in CHOLEC80_PHASES] for r in rows])
        assert [int(r["prompt_index"]) for r in rows] == p0.argmax(1).tolist()
        keep = np.array([int(r["gt_index"]) for r in rows]) >= 0
        prompt_pairs.append((gt, p0.argmax(1)[keep]))
        assert (out / "embeddings" / f"{name}.npy").exists()  # adaptation keeps what it fitted on
    assert metrics["results"]["prompts_only"]["strict"]["accuracy"] == pytest.approx(
        strict_phase_metrics(prompt_pairs)["accuracy"])
    assert metrics["chance_accuracy"] == pytest.approx(1 / 7)

    for png in ["confusion_raw.png", "confusion_smoothed_hmm.png", "video01_ribbon.png", "video02_ribbon.png"]:
        with Image.open(out / "plots" / png) as im:
            assert im.format == "PNG"
    report = (out / "report.md").read_text()
    assert "strict" in report.lower() and "relaxed" in report.lower() and "smoothed_hmm" in report
    assert str(surgery_root) not in report + (out / "metrics.json").read_text()  # no source paths


def test_phase_job_resumes_and_refuses_other_settings(phase_run, surgery_root, tiny_model):
    out, _ = phase_run
    kept = out / "predictions" / "video01.csv"
    redo = out / "predictions" / "video02.csv"
    kept_emb = out / "embeddings" / "video01.npy"
    before_kept, before_emb, before_redo = kept.read_text(), kept_emb.stat().st_mtime_ns, redo.read_text()
    redo.unlink()
    summary = zero_shot.run(_cfg(surgery_root, tiny_model(), out, "smoothing=hmm"))
    assert summary["videos_done"] == 2
    assert kept_emb.stat().st_mtime_ns == before_emb  # not embedded again
    assert kept.read_text() == before_kept and redo.read_text() == before_redo  # adapted identically
    with pytest.raises(MedvidError, match="other settings"):
        zero_shot.run(_cfg(surgery_root, tiny_model(), out, "smoothing=hmm", "fps=0.5"))


def test_tools_job_reports_ap(surgery_root, tiny_model, tmp_path):
    summary = zero_shot.run(_cfg(surgery_root, tiny_model(), tmp_path, "task=tools", "clip_frames=3"))
    rows = _rows(tmp_path / "predictions" / "video01.csv")
    p = np.array([[float(r[f"p_{c}"]) for c in CHOLEC80_TOOLS] for r in rows])
    assert ((p > 0) & (p < 1)).all()
    assert [int(r["pred_Grasper"]) for r in rows] == (p[:, 0] >= 0.5).astype(int).tolist()
    m = json.loads((tmp_path / "metrics.json").read_text())["results"]["raw"]
    y, s = [], []
    ds = Cholec80(surgery_root)
    for name in ds.videos():
        rows = _rows(tmp_path / "predictions" / f"{name}.csv")
        y.append(ds.tools_at(name, [float(r["time_s"]) for r in rows]))
        s.append([[float(r[f"p_{c}"]) for c in CHOLEC80_TOOLS] for r in rows])
    assert m["map"] == pytest.approx(tool_average_precision(np.concatenate(y), np.concatenate(s))["map"])
    assert summary["raw"]["map"] == pytest.approx(m["map"])
    assert "mAP" in (tmp_path / "report.md").read_text()


def test_folder_without_annotations_predicts_and_isolates_bad_videos(surgery_root, tiny_model, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(surgery_root / "videos" / "video01.mp4", folder / "caseA.mp4")
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    summary = zero_shot.run(_cfg(folder, tiny_model(), tmp_path / "out"))
    assert summary["videos_done"] == 1 and summary["videos_failed"] == 1
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["video"] == "broken"
    assert "gt_index" not in _rows(tmp_path / "out" / "predictions" / "caseA.csv")[0]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["results"] == {}
    assert "predictions only" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "plots" / "caseA_ribbon.png").exists()


def test_cli_zero_shot_phase_and_clean_errors(surgery_root, tiny_model, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["zero-shot", "phase", str(surgery_root), "--model", str(tiny_model()),
                            "--out", str(tmp_path / "o"), "max_videos=1", "plots=false"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o" / "predictions").glob("*.csv"))) == 1
    r = runner.invoke(app, ["zero-shot", "phase", str(surgery_root), "--model", str(tmp_path / "missing"),
                            "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "not a medvid model folder" in r.output


@pytest.mark.slow
def test_lectures_pretrain_then_zero_shot(surgery_root, tmp_path):
    """The whole chain: synthetic lectures -> lecture pairs -> a short surgical pretraining run ->
    zero-shot phases on the synthetic Cholec80-layout set with metrics and plots (several minutes)."""
    from medvid.pipelines import lectures_index, pretrain, synth_lectures

    lectures = tmp_path / "lectures"
    synth_lectures.run(load_config(synth_lectures.Config, "synth_lectures", overrides=[
        f"out={lectures}", "lectures=1", "height=96", "width=96", "audio=false"]))
    lectures_index.run(load_config(lectures_index.Config, "lectures_index", overrides=[
        f"root={lectures}", f"out={tmp_path / 'index'}"]))
    pretrain.run(load_config(pretrain.Config, None, config_dir() / "surgical_pretrain.yaml", overrides=[
        f"out={tmp_path / 'run'}", f"lectures.pairs={tmp_path / 'index' / 'pairs.jsonl'}", f"lectures.root={lectures}",
        "train.max_steps=3", "train.batch_size=8", "train.progress=false", "model_overrides.input_size=64"]))
    out = tmp_path / "zs"
    summary = zero_shot.run(_cfg(surgery_root, tmp_path / "run" / "model", out))
    assert summary["videos_done"] == 2
    m = json.loads((out / "metrics.json").read_text())["results"]["raw"]
    assert 0.0 <= m["strict"]["accuracy"] <= 1.0 and 0.0 <= m["relaxed"]["jaccard"] <= 1.0
    assert (out / "plots" / "confusion_raw.png").exists() and (out / "plots" / "video01_ribbon.png").exists()


def test_expansion_corpus_auto_is_the_models_pretraining_pairs(tmp_path):
    from omegaconf import OmegaConf

    from medvid.config import save_config
    from medvid.pipelines.zero_shot import Config
    from medvid.zeroshot.recognise import corpus_path

    pairs = tmp_path / "index" / "pairs.jsonl"
    pairs.parent.mkdir()
    pairs.write_text('{"text": "a sentence"}\n')
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    save_config(OmegaConf.create({"lectures": {"pairs": str(pairs)}}), model / "train_config.yaml")
    assert "index" in (model / "train_config.yaml").read_text() and str(tmp_path) not in (model / "train_config.yaml").read_text()
    cfg = OmegaConf.structured(Config(model=str(model)))
    assert corpus_path(cfg, cfg.model).resolve() == pairs.resolve()
    pairs.unlink()
    assert corpus_path(cfg, cfg.model) is None  # gone from this machine: prompts as written, with a warning
    cfg.expand_k = 0
    assert corpus_path(cfg, cfg.model) is None
