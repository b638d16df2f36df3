"""The typed input contract: ``PretrainedCfg`` round-trips ``config.json``'s ``pretrained_cfg`` unchanged (unknown
keys included) and ``Sampling`` is one validated value for which frames a clip holds and how they are masked."""
from __future__ import annotations

import json

import pytest

from medvid.models.checkpoint import read_config
from medvid.models.factory import create_view_classifier
from medvid.transforms.contract import PretrainedCfg, Sampling


def test_pretrained_cfg_round_trips_the_json_of_older_and_newer_folders():
    old = {"input_size": 112, "num_frames": 8, "crop": "center_square", "zoom": 0.0, "mean": [1.0, 2.0, 3.0],
           "std": [4.0, 5.0, 6.0], "scale": "0-255", "layout": "B,3,T,H,W RGB float32", "fps": None,
           "frame_stride": 3, "mask": "box", "channel_order": "RGB", "motion": None}
    cfg = PretrainedCfg.from_dict(old)
    assert (cfg.num_frames, cfg.frame_stride, cfg.fps, cfg.mean) == (8, 3, None, (1.0, 2.0, 3.0))
    want = {k: v for k, v in old.items() if v is not None or k in ("fps", "frame_stride")}
    assert cfg.to_dict() == want  # a recorded training sampling keeps its null fps
    newer = PretrainedCfg.from_dict({**old, "crop_pct": 0.9, "notes": {"a": 1}})  # keys of a later version
    assert newer.extra == {"crop_pct": 0.9, "notes": {"a": 1}} and newer.to_dict() == {**want, "crop_pct": 0.9,
                                                                                      "notes": {"a": 1}}
    assert PretrainedCfg.from_dict(None) == PretrainedCfg() and PretrainedCfg().to_dict() == {}


def test_a_saved_folder_keeps_unknown_contract_keys(tmp_path):
    from medvid.models.checkpoint import load_pretrained

    clf = create_view_classifier({"pretrained": False, "input_size": 32})
    out = clf.save_pretrained(tmp_path / "m")
    meta = read_config(out)
    meta["pretrained_cfg"]["from_the_future"] = [1, 2]
    (out / "config.json").write_text(json.dumps(meta))
    back = load_pretrained(out)
    assert back.pretrained_cfg.extra == {"from_the_future": [1, 2]} and back.preprocess().size == 32
    back.save_pretrained(tmp_path / "again")
    assert read_config(tmp_path / "again")["pretrained_cfg"] == meta["pretrained_cfg"]


def test_sampling_is_validated_and_names_what_a_clip_holds():
    s = Sampling(8, fps=15, frame_stride=2, motion="std")
    assert (s.fps, s.frame_stride, s.clip_frames) == (15.0, None, 9)  # a rate wins over a stride
    assert Sampling(4, frame_stride=3).frame_stride == 3 and Sampling().clip_frames == 16
    for bad in ({"mask": "circle"}, {"short_clip": "loop"}, {"motion": "flow"}, {"num_frames": 0}):
        with pytest.raises(ValueError):
            Sampling(**bad)
    recorded = PretrainedCfg(num_frames=8, fps=10.0, mask="box", motion="std")
    assert Sampling.recorded(recorded) == Sampling(8, 10.0, None, "box", "wrap", "std")
    assert Sampling.recorded(recorded, frame_stride=4) == Sampling(8, None, 4, "box", "wrap", "std")  # the job wins
    assert Sampling.recorded(recorded.with_training_sampling(Sampling(4, None, 2, "none"))) == Sampling(4, None, 2,
                                                                                                         "none")
