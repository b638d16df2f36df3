"""`medvid probe` end to end on tiny synthetic data: EchoNet-layout EF (probe, few-shot, fine-tune, zero-shot,
training mean) and phenotypes, Cholec80-layout phases (probe, temporal head, zero-shot, chance) and tools;
outputs and errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medvid.cli import app
from medvid.config import load_config
from medvid.errors import MedvidError
from medvid.pipelines import probe, synth_echo, synth_surgery


@pytest.fixture(scope="module")
def model(tiny_model):
    """The shared tiny untrained model, at 32 px to keep the probe runs fast."""
    return tiny_model(input_size=32)


@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    out = tmp_path_factory.mktemp("echonet")
    synth_echo.run(load_config(synth_echo.Config, "synth_echo", None, [
        f"out={out}", "studies=10", "layout=echonet", "frames_min=20", "frames_max=24", "fps_choices=[50.0]",
        "split_fractions=[0.6,0.2,0.2]", "progress=false", "seed=4"]))
    return out


def _run(*overrides):
    return probe.run(load_config(probe.Config, "probe", None, ["progress=false", "seeds=[0,1]", *overrides]))


def test_echo_ef_probe_outputs_and_baselines(echonet, model, tmp_path):
    summary = _run("task=echo-ef", f"model={model}", f"data={echonet}", f"out={tmp_path}", "echo.clip_frames=8",
                   "fractions=[0.5,1.0]", "kshots=[1]", "echo.finetune=true", "echo.finetune_epochs=2")
    assert summary["headline_metric"] == "mae"
    assert {"probe_mae", "training_mean_mae", "zero_shot_mae", "finetune_mae"} <= set(summary)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["label_fractions"]) == {"0.5", "1"} and metrics["label_fractions"]["0.5"]["mae"]["n"] == 2
    assert set(metrics["results"]["probe"]) >= {"mae", "rmse", "r2"} and "1" in metrics["k_shot"]
    assert metrics["studies"] == {"train": 6, "val": 2, "test": 2}
    assert metrics["clips"] == sum(max(-(-f // 2) - 8, 0) + 1 for f in
                                   pd.read_parquet(tmp_path / "ingest" / "videos.parquet")["frames"])
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert len(pred) == 10 and {"study_key", "split", "ef", "probe_ef", "zero_shot_ef", "finetune_ef"} <= set(pred)
    names = pd.read_csv(echonet / "FileList.csv")["FileName"]
    assert not any(n in (tmp_path / "predictions.csv").read_text() for n in names)  # keyed by pseudonyms
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    again = _run("task=echo-ef", f"model={model}", f"data={echonet}", f"out={tmp_path}", "echo.clip_frames=8",
                 "fractions=[1.0]", "kshots=[]", "zero_shot=false", "overwrite=true")  # cached features reused
    assert again["probe_mae"] == pytest.approx(summary["probe_mae"])
    pheno = _run("task=echo-phenotypes", f"model={model}", f"data={tmp_path / 'ingest'}", f"echo.video_root={echonet}",
                 f"out={tmp_path / 'pheno'}", f"cache={tmp_path / 'cache'}", "echo.clip_frames=8", "fractions=[1.0]",
                 "kshots=[]", "echo.features=backbone_stats")  # an ingest folder as data; the same frame cache
    metrics = json.loads((tmp_path / "pheno" / "metrics.json").read_text())
    assert metrics["targets"] == ["reduced_ef"] and "probe_mean_auroc" in pheno
    assert "auroc_reduced_ef" in metrics["results"]["zero_shot"] and not (tmp_path / "pheno" / "cache").exists()


def test_phase_probe_temporal_head_zero_shot_and_chance(model, tmp_path):
    root = tmp_path / "surgery"
    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", None, [
        f"out={root}", "ids=[1,2,3,41]", "seed=5", "duration_scale=0.2", "height=64", "width=80"]))
    summary = _run("task=phase", f"model={model}", f"data={root}", f"out={tmp_path / 'o'}",
                   "fractions=[0.5,1.0]", "kshots=[2]", "surgery.tcn_epochs=2", "surgery.tcn_layers=3", "seeds=[0]")
    assert {"probe_strict_accuracy", "temporal_head_strict_accuracy", "zero_shot_strict_accuracy",
            "chance_strict_accuracy", "majority_class_strict_accuracy"} <= set(summary)
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert len(metrics["videos"]["val"]) == 1 and metrics["videos"]["test"] == ["video41"]
    assert {"strict_macro_f1", "relaxed_accuracy", "relaxed_jaccard"} <= set(metrics["results"]["probe"])
    rows = pd.read_csv(tmp_path / "o" / "predictions" / "video41.csv")
    assert list(rows.columns) == ["time_s", "gt", "probe", "tcn", "zero_shot"]
    tools = _run("task=tools", f"model={model}", f"data={root}", f"out={tmp_path / 't'}", "fractions=[1.0]",
                 "kshots=[]", "surgery.temporal_head=false", f"cache={tmp_path / 'o' / 'cache'}")
    assert {"probe_map", "chance_map", "zero_shot_map"} <= set(tools)


def test_bad_options_fail_before_work(model, echonet, tmp_path):
    with pytest.raises(MedvidError, match="task must be one of"):
        _run("task=ef", f"model={model}", f"data={echonet}", f"out={tmp_path}")
    with pytest.raises(MedvidError, match="fractions must be in"):
        _run("task=echo-ef", f"model={model}", f"data={echonet}", f"out={tmp_path}", "fractions=[0,1]")
    with pytest.raises(MedvidError, match="finetune applies to echo-ef"):
        _run("task=phase", f"model={model}", f"data={echonet}", f"out={tmp_path}", "echo.finetune=true")
    r = CliRunner().invoke(app, ["probe", "echo-ef", "--model", str(model), "--data", str(tmp_path),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "neither an ingest folder" in r.output
