"""Resume only the same run: settings records, refusals that name the keys, failed starts that do not block."""
from __future__ import annotations

import json

import pytest
import torch

from medvid.errors import MedvidError
from medvid.runs import claim_run, run_settings
from medvid.training.trainer import Trainer, TrainConfig
from tiny_training import PairData, TinyDual


def test_changed_settings_are_refused_with_the_keys_named(tmp_path):
    claim_run(tmp_path, {"train.lr": 0.001, "ingest_dir": "a"})
    assert claim_run(tmp_path, {"train.lr": 0.001, "ingest_dir": "a"}) is True
    with pytest.raises(MedvidError, match=r"train\.lr: 0\.001 → 0\.1.*overwrite=true"):
        claim_run(tmp_path, {"train.lr": 0.1, "ingest_dir": "a"})
    assert claim_run(tmp_path, {"train.lr": 0.1}, overwrite=True) is False
    assert json.loads((tmp_path / "settings.json").read_text()) == {"train.lr": 0.1}


def test_a_start_that_left_no_results_does_not_block_the_corrected_run(tmp_path):
    claim_run(tmp_path, {"smoothing": "hmmm"})
    assert claim_run(tmp_path, {"smoothing": "hmm"}, has_results=False) is False


def test_paths_are_recorded_without_absolute_paths_and_compare_by_target(tmp_path, monkeypatch):
    data = tmp_path / "ingest"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    rel = run_settings({"ingest_dir": "ingest", "train": {"lr": 1.0, "progress": True}}, ignore=["train.progress"])
    absolute = run_settings({"ingest_dir": str(data), "train": {"lr": 1.0, "progress": False}},
                            ignore=["train.progress"])
    assert rel == absolute and set(rel) == {"ingest_dir", "train.lr"}
    assert str(tmp_path) not in json.dumps(rel)


def test_trainer_refuses_to_resume_checkpoints_of_other_settings(tmp_path):
    def fit(lr: float, resume: bool = True) -> dict:
        torch.manual_seed(0)
        cfg = TrainConfig(max_steps=4, batch_size=16, lr=lr, warmup_steps=0, checkpoint_every=2, eval_every=0,
                          progress=False, device="cpu")
        return Trainer(TinyDual(), PairData(64), cfg, tmp_path, settings={"train.lr": lr}).fit(resume=resume)

    assert fit(0.01)["step"] == 4
    with pytest.raises(MedvidError, match="train.lr"):
        fit(0.1)
    assert fit(0.1, resume=False)["step"] == 4  # resume=false starts afresh


def test_settings_added_by_a_newer_medvid_do_not_block_a_resume(tmp_path):
    claim_run(tmp_path, {"train.lr": 0.001})
    assert claim_run(tmp_path, {"train.lr": 0.001, "echo.val_fraction": 0.15}) is True
