"""Checkpoints: medvid's safetensors format, its registry of model kinds, the overwrite refusal and
the importers' error handling. Fidelity to each publisher's code: ``test_importers_fidelity.py``."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models import importers as imp
from medvid.models.clip import VideoTextModel
from medvid.models.factory import create_model, create_view_classifier
from medvid.models.checkpoint import Pretrained, model_kinds, register_kind, save_pretrained
from medvid.models.checkpoint import load_pretrained, read_config
from medvid.models.importers import CheckpointMismatchError
from medvid.models.view import ViewClassifier
from medvid.transforms.contract import PretrainedCfg, Sampling
from medvid.utils import seed_everything
from model_testdata import random_weights


# --- medvid format ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_model():
    seed_everything(0)
    model = create_model({"temporal": "xclip", "max_frames": 8}, pretrained=False)
    with torch.no_grad():  # move weights away from their init so the round trip proves something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    return model.eval()


def test_save_load_round_trip_is_bit_exact(trained_model, tmp_path):
    out = trained_model.save_pretrained(tmp_path / "m")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "README.md", "text"}
    meta = read_config(out)
    assert meta["kind"] == "video_text" and meta["pretrained_cfg"]["scale"] == "0-255"
    assert meta["config"]["text_model_path"] == "text" and meta["config"]["backbone_checkpoint"] is None
    assert str(tmp_path) not in (out / "config.json").read_text()  # no local paths in shareable files
    loaded = VideoTextModel.from_pretrained(out)
    a, b = trained_model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    clips = torch.randn(2, 3, 3, 48, 48)
    tok = trained_model.tokenize(["tricuspid regurgitation", "normal"])
    with torch.no_grad():
        assert torch.equal(trained_model.encode_video(clips), loaded.encode_video(clips))
        assert torch.equal(trained_model.encode_text(**tok), loaded.encode_text(**loaded.tokenize(
            ["tricuspid regurgitation", "normal"])))
    assert loaded.pretrained_cfg == trained_model.pretrained_cfg
    # saving over an existing model folder replaces it; a loaded model saves again identically
    loaded.save_pretrained(out)
    assert torch.equal(VideoTextModel.from_pretrained(out).logit_scale, trained_model.logit_scale)


def test_view_classifier_round_trip(tmp_path):
    seed_everything(1)
    clf = create_view_classifier({"labels": ["slide", "operative", "other", "black"], "clip_level": True,
                                  "temporal": "attention"}, pretrained=False).eval()
    clf.save_pretrained(tmp_path / "v")
    back = ViewClassifier.from_pretrained(tmp_path / "v")
    assert back.labels == clf.labels and back.clip_level
    x = torch.randn(1, 3, 2, 48, 48)
    with torch.no_grad():
        assert torch.equal(clf(x), back(x))
    with pytest.raises(MedvidError, match="this needs a VideoTextModel"):
        VideoTextModel.from_pretrained(tmp_path / "v")


def test_load_errors(tmp_path, trained_model):
    with pytest.raises(MissingWeightsError, match="not a medvid model folder"):
        load_pretrained(tmp_path)
    out = trained_model.save_pretrained(tmp_path / "m")
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["embed_dim"] = 256
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="size mismatch|does not match"):
        load_pretrained(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="weights missing"):
        load_pretrained(out)


# --- importers --------------------------------------------------------------------------------
def _save(obj, path):
    torch.save(obj, path)
    return path


def test_surgvlp_accepts_base_size_bert_layout():
    from transformers import BertConfig, BertModel

    base = BertConfig(vocab_size=28996)  # Bio_ClinicalBERT: BERT-base, cased vocabulary
    with torch.device("meta"):
        bert = BertModel(base)
    state = {f"backbone_text.model.{k}": v for k, v in bert.state_dict().items()}
    got = imp.bert_config_from_state(state, "backbone_text.model.")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size"):
        assert getattr(got, key) == getattr(base, key), key


def test_mismatch_errors_name_the_keys(tmp_path):
    good = random_weights(imp.echonet_dynamic_ef, 5).state_dict()
    missing = {k: v for k, v in good.items() if k != "fc.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing 1 \(fc.bias\)"):
        imp.load_strict(imp.build_empty(imp.echonet_dynamic_ef), missing, "x")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected 1 \(extra.weight\)"):
        imp.load_strict(imp.build_empty(imp.echonet_dynamic_ef), {**good, "extra.weight": torch.zeros(1)}, "x")
    wrong = {**good, "fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}
    with pytest.raises(CheckpointMismatchError, match=r"fc.weight: file \(2, 512\) vs model \(1, 512\)"):
        imp.load_strict(imp.build_empty(imp.echonet_dynamic_ef), wrong, "x")
    with pytest.raises(MissingWeightsError, match="not found"):
        imp.import_panecho(tmp_path / "absent.pt")
    with pytest.raises(CheckpointMismatchError, match="under 'weights'"):
        imp.import_panecho(_save({"state_dict": {}}, tmp_path / "p.pt"))


class _Payload:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Payload()}, path)
    with pytest.raises(MedvidError, match="weights-only"):
        imp.import_panecho(path)


def test_save_refuses_folders_that_are_not_medvid_checkpoints(tmp_path):
    """Data loss guard: only an empty folder or a medvid checkpoint is ever replaced."""
    model = random_weights(imp.EchoNetDynamic, 6)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    hf = tmp_path / "hf_model"  # someone's Hugging Face folder: it has a config.json too
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (hf / "model.safetensors").write_bytes(b"weights")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for target in (notes, hf, broken, a_file):
        before = sorted((p.name, p.read_bytes()) for p in (target.iterdir() if target.is_dir() else [target]))
        with pytest.raises(MedvidError, match="refusing to overwrite"):
            model.save_pretrained(target)
        after = sorted((p.name, p.read_bytes()) for p in (target.iterdir() if target.is_dir() else [target]))
        assert before == after
    empty = tmp_path / "empty"
    empty.mkdir()
    model.save_pretrained(empty)
    model.save_pretrained(empty)  # a medvid checkpoint is replaced
    assert read_config(empty)["kind"] == "echonet_dynamic"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old folders left


class _Tiny(Pretrained, nn.Module):
    """A kind defined outside medvid: registering it is all the checkpoint format needs."""

    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(width, 2)
        self.config = {"width": width}
        self.pretrained_cfg = PretrainedCfg(input_size=width)

    @classmethod
    def from_checkpoint_config(cls, config, folder):
        return cls(**config)


def test_registry_dispatches_on_the_saved_kind(tmp_path):
    assert {"video_text", "view_classifier", "echoprime_video", "echoprime_view", "echonet_dynamic", "panecho",
            "surgvlp"} <= set(model_kinds())
    register_kind("test_tiny", _Tiny)
    model = _Tiny(3)
    out = model.save_pretrained(tmp_path / "tiny")
    assert read_config(out)["kind"] == "test_tiny" and read_config(out)["pretrained_cfg"] == {"input_size": 3}
    back = load_pretrained(out)
    assert type(back) is _Tiny and torch.equal(back.lin.weight, model.lin.weight)
    with pytest.raises(MedvidError, match="this needs a VideoTextModel"):
        VideoTextModel.from_pretrained(out)
    with pytest.raises(MedvidError, match="not a registered model kind"):
        save_pretrained(nn.Linear(2, 2), tmp_path / "plain")
    meta = read_config(out)
    meta["kind"] = "nobody"
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(MedvidError, match="unknown model kind 'nobody'"):
        load_pretrained(out)


def test_saved_input_contract_is_what_training_used(tmp_path, tiny_model):
    """A model trained on 8 frames at stride 2 says so in its folder (not the model YAML's 16)."""
    from types import SimpleNamespace

    from medvid.config import load_config
    from medvid.training.pretrain import PretrainSettings, save_model

    model = load_pretrained(tiny_model())
    assert model.pretrained_cfg.num_frames == 16
    cfg = load_config(PretrainSettings, None, overrides=["echo.n_frames=8", "echo.frame_stride=2", "echo.mask=box",
                                                        f"out={tmp_path}"])
    save_model(cfg, SimpleNamespace(model=model), tmp_path)
    saved = read_config(tmp_path / "model")["pretrained_cfg"]
    assert (saved["num_frames"], saved["frame_stride"], saved["fps"], saved["mask"]) == (8, 2, None, "box")
    assert saved["input_size"] == 64 and saved["channel_order"] == "RGB" and "mean" in saved and "crop" in saved
    cfg = load_config(PretrainSettings, None, overrides=["task=surgical", "lectures.n_frames=4",
                                                        "lectures.sample_fps=2.0", f"out={tmp_path}"])
    save_model(cfg, SimpleNamespace(model=model), tmp_path)
    saved = read_config(tmp_path / "model")["pretrained_cfg"]
    assert (saved["num_frames"], saved["fps"], saved["frame_stride"]) == (4, 2.0, None)


def test_pretrain_continuing_a_saved_model_feeds_its_recorded_frames(tmp_path):
    """``medvid pretrain init_from=`` a model saved with 8 frames at stride 3 and the box mask: the echo loops
    are cached as 8 frames with that sampling (the job sets none), and the settings record what was used."""
    from medvid.config import load_config
    from medvid.models.checkpoint import record_training_input
    from medvid.training.pretrain import PretrainSettings, build_model, echo_task

    from echo_testdata import ingest_synth
    from medvid.synth.echo import synthesize

    synthesize(tmp_path / "synth", studies=2, seed=2, loops_per_study=2, rows=64, cols=80, frames_range=(20, 24),
               still_fraction=0.0)
    ingest_synth(tmp_path / "synth", tmp_path / "ingest")
    model = create_model({"temporal": "mean", "input_size": 48}, pretrained=False)
    record_training_input(model, Sampling(8, None, 3, "box"))
    saved = model.save_pretrained(tmp_path / "first")
    cfg = load_config(PretrainSettings, None, overrides=[
        f"init_from={saved}", f"out={tmp_path / 'run'}", f"echo.ingest_dir={tmp_path / 'ingest'}",
        f"echo.dicom_root={tmp_path / 'synth' / 'dicom'}", "train.progress=false"])
    echo_task(cfg, torch.device("cpu"), build_model(cfg))
    meta = json.loads((tmp_path / "run" / "cache" / "echo" / "meta.json").read_text())
    assert meta["t"] == 8 and meta["fingerprint"]["frame_stride"] == 3 and meta["fingerprint"]["mask"] == "box"
    assert (cfg.echo.n_frames, cfg.echo.frame_stride, cfg.echo.mask) == (8, 3, "box")
