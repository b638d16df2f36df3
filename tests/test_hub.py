"""Checkpoints: medvid's safetensors format round trip, and importers for published layouts.

Importer tests build each publisher's architecture locally (random weights), save it with
``torch.save`` in the publisher's layout, import it and compare outputs; nothing is downloaded.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models import importers as imp
from medvid.models.clip import VideoTextModel
from medvid.models.factory import create_model, create_view_classifier
from medvid.models.hub import CheckpointMismatchError, load_pretrained, read_config
from medvid.models.view import ViewClassifier
from medvid.utils import seed_everything


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
    other = tmp_path / "not_a_model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(MedvidError, match="refusing to overwrite"):
        loaded.save_pretrained(other)


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
    with pytest.raises(TypeError, match="not a VideoTextModel"):
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


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Distinct random values in every tensor (norm statistics included), so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.01)
    return model.eval()


def _random_model(factory, seed: int) -> nn.Module:
    """A publisher architecture with random weights, skipping its (slow) default init."""
    with torch.device("meta"):
        model = factory()
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
            else:
                t.zero_()
    return model.eval()


def test_echoprime_video_encoder(tmp_path):
    src = _random_model(imp.echoprime_video_encoder, 0)
    path = _save(src.state_dict(), tmp_path / "echo_prime_encoder.pt")
    got = imp.import_echoprime_video_encoder(path)
    assert "head.1.weight" in src.state_dict() and src.state_dict()["head.1.weight"].shape == (512, 768)
    x = torch.randn(1, 3, 16, 224, 224)  # mViT-v2-S is fixed to 16x224x224
    with torch.no_grad():
        assert torch.equal(src(x), got(x))


def test_echoprime_view_classifier(tmp_path):
    src = _random_model(imp.echoprime_view_classifier, 1)
    path = _save(src.state_dict(), tmp_path / "view_classifier.pt")
    got = imp.import_echoprime_view_classifier(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = got(x)
        assert out.shape == (2, 11) and torch.equal(src(x), out)


def test_echonet_dynamic_module_prefix(tmp_path):
    src = _random_model(imp.echonet_dynamic_ef, 2)
    wrapped = nn.DataParallel(src)  # the publisher saved a DataParallel model: keys start with "module."
    path = _save({"epoch": 45, "state_dict": wrapped.state_dict(), "best_loss": 1.0}, tmp_path / "best.pt")
    got = imp.import_echonet_dynamic(path)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert got(x).shape == (1, 1) and torch.equal(src(x), got(x))
    with pytest.raises(CheckpointMismatchError, match="under 'state_dict'"):
        imp.import_echonet_dynamic(_save(src.state_dict(), tmp_path / "plain.pt"))


def test_panecho_weights_key_and_heads(tmp_path):
    heads = {"EF": 1, "LVSystolicFunction": 3, "pericardial-effusion": 1}
    src = _random_model(lambda: imp.PanEcho(heads), 3)
    path = _save({"weights": src.state_dict()}, tmp_path / "panecho.pt")
    got = imp.import_panecho(path)
    assert got.tasks == list(heads)
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        a, b = src(x), got(x)
    assert set(b) == set(heads) and b["LVSystolicFunction"].shape == (1, 3)
    assert all(torch.equal(a[k], b[k]) for k in heads)
    keys = src.state_dict()
    assert "encoder.encoder.model.features.0.0.weight" in keys and "encoder.time_encoder.pe" in keys
    assert "encoder.transformer.layers.3.linear1.weight" in keys and "pericardial-effusion_head.1.weight" in keys


def _surgvlp_state(bert_config) -> tuple[imp.SurgVLPModel, dict]:
    src = _randomise(imp.SurgVLPModel(bert_config), 4)
    state = dict(src.state_dict())
    # what older transformers versions and the original ResNet put in the file
    state["backbone_text.model.embeddings.position_ids"] = torch.arange(bert_config.max_position_embeddings)[None]
    state["backbone_img.model.fc.weight"] = torch.zeros(1000, 2048)
    state["backbone_img.model.fc.bias"] = torch.zeros(1000)
    return src, state


def test_surgvlp_family_round_trip(tmp_path):
    from transformers import BertConfig

    from medvid.models.text import default_text_model_path

    cfg = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=256, max_position_embeddings=128)
    src, state = _surgvlp_state(cfg)
    assert all(k.startswith(("backbone_img.model.", "backbone_img.global_embedder.", "backbone_text.model."))
               for k in state)
    path = _save(state, tmp_path / "surgvlp.pth")
    got = imp.import_surgvlp(path, tokenizer_path=default_text_model_path())
    tok = got.tokenize(["I use the clipper to clip the cystic duct", "grasper retracts the gallbladder"])
    assert tok["input_ids"].shape == (2, 77)  # the reference pads every prompt to 77 tokens
    clips = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(src.encode_text(**tok), got.encode_text(**tok))
        # the reference averages over all 77 positions, padding included
        hidden = got.backbone_text.model(**tok, output_hidden_states=True).hidden_states
        ref = torch.stack(hidden[-4:]).mean(0).mean(1)
        torch.testing.assert_close(got.encode_text(**tok, normalize=False), ref)
        v = got.encode_video(clips)
        assert v.shape == (2, 128) and torch.equal(src.encode_video(clips), v)
    assert got.logit_scale.exp().item() == pytest.approx(10.0)
    assert got.pretrained_cfg["zoom"] == pytest.approx(0.1889, abs=1e-4)


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
    good = _random_model(imp.echonet_dynamic_ef, 5).state_dict()
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
