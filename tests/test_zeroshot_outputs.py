"""The zero-shot output folder and results without a model: CSV columns and rounding, a table read back
as written, resume bookkeeping, refusal of other settings, and the report of a run without annotations."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medvid.errors import MedvidError
from medvid.transforms.contract import PretrainedCfg
from medvid.zeroshot.outputs import ResultsFolder, phase_table, read_table, write_table
from medvid.zeroshot.prompts import PromptSet
from medvid.zeroshot.recognise import Recogniser, Recognition
from medvid.zeroshot.results import evaluate_phases, headline, report_text


def _rec(**settings) -> Recogniser:
    return Recogniser(SimpleNamespace(pretrained_cfg=PretrainedCfg()), "phase", PromptSet(["a", "b"], {}),
                      Recognition(**settings))


def test_phase_table_columns_rounding_and_round_trip(tmp_path):
    probs = np.array([[0.123456789, 0.876543211], [0.9, 0.1], [0.4, 0.6]])
    header, rows = phase_table(_rec(), np.array([0.0, 1.00049, 2.0]), np.array([0, 25, 50]), probs,
                               np.array([1, 0, -1]), probs)
    assert header == ["time_s", "frame", "pred", "pred_index", "p_a", "p_b", "pred_smoothed_index",
                      "prompt_index", "prompt_p_a", "prompt_p_b", "gt_index"]
    write_table(tmp_path / "v.csv", header, rows)
    t = read_table(tmp_path / "v.csv")
    assert list(t) == header
    assert t["p_a"].tolist()[0] == "0.12346" and t["time_s"].tolist()[1] == "1.0"
    assert t["pred"].tolist() == ["b", "a", "b"] and t["gt_index"].astype(int).tolist() == [1, 0, -1]
    plain, _ = phase_table(_rec(smoothing="none", adaptation="none"), np.zeros(3), np.zeros(3, int), probs, None,
                           probs)
    assert plain == ["time_s", "frame", "pred", "pred_index", "p_a", "p_b"]


def test_results_folder_resume_bookkeeping_and_settings_refusal(tmp_path):
    out = ResultsFolder(tmp_path)
    out.claim({"fps": 1.0}, overwrite=False)
    write_table(out.csv("v1"), ["time_s"], [[0.0]])
    assert out.done(["v1", "v2"]) == ["v1"] and out.todo(["v1", "v2"]) == ["v2"]
    assert list(out.tables(["v1", "v2"])) == ["v1"]
    out.claim({"fps": 1.0}, overwrite=False)  # same settings: resume keeps the predictions
    assert out.csv("v1").exists()
    with pytest.raises(MedvidError, match="other settings"):
        out.claim({"fps": 0.5}, overwrite=False)
    out.claim({"fps": 0.5}, overwrite=True)
    assert out.todo(["v1"]) == ["v1"]


def test_report_of_a_run_without_annotations_says_predictions_only(tmp_path):
    settings = SimpleNamespace(**vars(Recognition()), task="phase", model=str(tmp_path / "model"),
                               dataset="cholec80", split=None, fps=1.0, tolerance_s=10.0, cholec80_exceptions=True)
    table = {"time_s": np.array(["0.0"]), "pred_index": np.array(["1"])}
    results, pairs = evaluate_phases(settings, {"v1": table}, ["a", "b"])
    assert results == {} and pairs == {} and headline("phase", results) == {}
    summary = {"videos_done": 1, "videos_failed": 0,
               "sampling": {"clip_frames": 1, "clip_fps": 1.0, "source": "settings"}}
    text = report_text(settings, Path("p.yaml"), ["a", "b"], {"results": results}, summary)
    assert text.startswith("# Zero-shot phase recognition\n") and "`model`" in text
    assert text.endswith("No annotated videos: predictions only (OUT/predictions/).\n")
