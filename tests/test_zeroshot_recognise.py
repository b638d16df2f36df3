"""The zero-shot recogniser's one-place definitions: the prompt-file table, the settings check, and
self-training that gives the same result from probabilities held in memory or read back from a CSV."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medvid.transforms.contract import PretrainedCfg
from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.zeroshot.prompts import PromptSet
from medvid.zeroshot.recognise import (DECIMALS, PROMPT_FILES, Recogniser, Recognition, check_recognition,
                                       prompt_file)


def test_prompt_file_table_names_shipped_files_and_a_given_file_wins(tmp_path):
    for (dataset, task), name in PROMPT_FILES.items():
        assert prompt_file(dataset, task) == config_dir() / "prompts" / name and prompt_file(dataset, task).is_file()
    assert prompt_file("cholec80", "phase", str(tmp_path / "mine.yaml")) == tmp_path / "mine.yaml"
    with pytest.raises(MedvidError, match="no shipped prompts for dataset 'autolaparo' and task 'tools'"):
        prompt_file("autolaparo", "tools")


def test_settings_are_checked_before_work():
    check_recognition(Recognition())
    with pytest.raises(MedvidError, match="tool_reference must be one of"):
        check_recognition(Recognition(tool_reference="none"))
    with pytest.raises(MedvidError, match="calibration_strength"):
        check_recognition(Recognition(calibration_strength=1.0))


def test_self_training_is_the_same_in_memory_and_from_recorded_probabilities():
    rng = np.random.default_rng(0)
    emb = [rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)]
    emb[0][:20, 0] += 3.0
    probs = [rng.dirichlet(np.ones(3), size=len(e)) for e in emb]
    rec = Recogniser(SimpleNamespace(pretrained_cfg=PretrainedCfg()), "phase", PromptSet(["a", "b", "c"], {}), Recognition())
    assert rec.adapting and rec.sampling["clip_frames"] == 1
    recorded = [np.array([[float(str(v)) for v in row] for row in p.round(DECIMALS)]) for p in probs]  # CSV text
    in_memory, from_csv = rec.adapt(emb, probs), rec.adapt(emb, recorded)
    for a, b in zip(in_memory, from_csv):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(in_memory[0], probs[0])  # it did adapt
    tools = Recogniser(SimpleNamespace(pretrained_cfg=PretrainedCfg()), "tools", PromptSet(["a"], {}), Recognition())
    assert not tools.adapting
    np.testing.assert_array_equal(tools.adapt(emb[:1], probs[:1])[0], probs[0])  # tools stay prompt-only
