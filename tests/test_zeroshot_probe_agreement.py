"""`medvid probe` and `medvid zero-shot` give the same zero-shot numbers for the same model on the same videos:
both score through one recogniser (medvid.zeroshot.recognise) with the zero-shot job's settings."""
from __future__ import annotations

import json

import pytest

from medvid.config import load_config
from medvid.models.factory import create_model
from medvid.pipelines import probe, synth_surgery, zero_shot


@pytest.fixture(scope="module")
def surgery(tmp_path_factory):
    """Four annotated videos numbered so that split cholec80_40_40 has train (1-3) and test (41)."""
    root = tmp_path_factory.mktemp("surgery")
    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", None, [
        f"out={root}", "ids=[1,2,3,41]", "seed=7", "duration_scale=0.2", "height=64", "width=80"]))
    model = tmp_path_factory.mktemp("model")
    create_model({"pretrained": False, "input_size": 32, "temporal": "mean"}).save_pretrained(model)
    return root, model


@pytest.mark.parametrize("task", ["phase", "tools"])
def test_probe_and_zero_shot_report_the_same_zero_shot_numbers(surgery, task, tmp_path):
    root, model = surgery
    summary = probe.run(load_config(probe.Config, "probe", None, [
        f"task={task}", f"model={model}", f"data={root}", f"out={tmp_path / 'probe'}", "progress=false",
        "fractions=[1.0]", "kshots=[]", "seeds=[0]", "surgery.temporal_head=false"]))
    zero_shot.run(load_config(zero_shot.Config, "zero_shot", overrides=[
        f"task={task}", f"data_root={root}", f"model={model}", f"out={tmp_path / 'zs'}",
        "split=cholec80_40_40:test", "plots=false"]))
    probed = json.loads((tmp_path / "probe" / "metrics.json").read_text())["results"]["zero_shot"]
    raw = json.loads((tmp_path / "zs" / "metrics.json").read_text())["results"]["raw"]
    if task == "phase":
        assert probed["strict_accuracy"] == raw["strict"]["accuracy"]
        assert probed["strict_macro_f1"] == raw["strict"]["macro_f1"]
        assert probed["relaxed_accuracy"] == raw["relaxed"]["accuracy"]
        assert probed["relaxed_jaccard"] == raw["relaxed"]["jaccard"]
        assert summary["zero_shot_strict_accuracy"] == raw["strict"]["accuracy"]
    else:
        assert probed["map"] == raw["map"] and summary["zero_shot_map"] == raw["map"]
