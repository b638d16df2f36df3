"""VideoTextModel, video encoder temporal modules and text encoder: shapes, masking, gradients, determinism."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvid.errors import MedvidError
from medvid.models.factory import (create_model, create_tokenizer, create_video_encoder, list_models, model_config,
                                   view_classifier_config)
from medvid.models.video import TEMPORAL_MODULES, create_temporal
from medvid.utils import seed_everything

B, T, S = 2, 4, 64  # small clips keep the CPU tests fast


def _model(temporal: str = "transformer", **kw):
    seed_everything(0)
    return create_model({"temporal": temporal, "max_frames": 8, **kw}, pretrained=False)


@pytest.fixture(scope="module")
def model():
    return _model().eval()


@pytest.fixture(scope="module")
def clips():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 3, T, S, S, generator=g) * 50 + 100


def test_registry_lists_default_and_validates():
    assert "medvid-effnetlite0-minilm" in list_models()
    assert model_config().temporal == "transformer"
    for name in list_models():  # every shipped registry entry validates against its schema
        cfg = view_classifier_config(name) if name.startswith("view-") else model_config(name)
        assert cfg.name == name
    with pytest.raises(MedvidError, match="unknown model"):
        model_config("no-such-model")
    with pytest.raises(MedvidError, match="invalid model config"):
        model_config({"temporal_layrs": 3})


def test_shapes_and_norm(model, clips):
    with torch.no_grad():
        v = model.encode_video(clips)
        tok = model.tokenize(["the left ventricle is dilated", "normal study"])
        t = model.encode_text(**tok)
        raw = model.encode_video(clips, normalize=False)
    assert v.shape == (B, 512) and t.shape == (2, 512)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(B))
    torch.testing.assert_close(F.normalize(raw, dim=-1), v)
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.pretrained_cfg.mean == (127.5,) * 3 and model.pretrained_cfg.scale == "0-255"
    assert model.pretrained_cfg.to_dict()["mean"] == [127.5] * 3  # config.json keeps the JSON list


def test_tokenizer_factory_matches_model(model):
    tok = create_tokenizer()
    a = tok(["aortic stenosis"], return_tensors="pt")["input_ids"]
    assert torch.equal(a, model.tokenize(["aortic stenosis"])["input_ids"])
    assert model.tokenize(["word " * 500], max_length=16)["input_ids"].shape[1] == 16


@pytest.mark.parametrize("temporal", TEMPORAL_MODULES)
def test_padded_frames_do_not_change_output(temporal, clips):
    seed_everything(0)
    encoder = create_video_encoder({"temporal": temporal, "max_frames": 8}, pretrained=False).eval()
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    noisy = clips.clone()
    for b in range(B):
        noisy[b, :, ~mask[b]] = torch.rand_like(noisy[b, :, ~mask[b]]) * 1e4
    with torch.no_grad():
        a = encoder(clips, mask)
        b = encoder(noisy, mask)
        short = encoder(clips[:1, :, :3], None)  # clip 0 without its padding
    assert torch.equal(a, b)
    torch.testing.assert_close(a[:1], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temporal", TEMPORAL_MODULES)
def test_temporal_module_masking_on_features(temporal):
    seed_everything(0)
    mod = create_temporal(temporal, 32, width=16, heads=4, max_frames=8).eval()
    feats = torch.randn(3, 6, 32)
    mask = torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] + [0] * 5], dtype=torch.bool)
    other = feats.clone()
    other[~mask] = 123.0
    with torch.no_grad():
        torch.testing.assert_close(mod(feats, mask), mod(other, mask), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mod(feats, mask)[1:2], mod(feats[1:2, :2], mask[1:2, :2]), atol=1e-5, rtol=1e-5)
    assert mod(feats, mask).shape == (3, mod.out_dim)


def test_all_padded_clip_is_an_error(model, clips):
    with pytest.raises(ValueError, match="at least one valid frame"):
        model.encode_video(clips, torch.zeros(B, T, dtype=torch.bool))


def test_feature_cache_path_equals_end_to_end(model, clips):
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        direct = model.encode_video(clips, mask)
        feats = model.encode_frames(clips.permute(0, 2, 1, 3, 4).reshape(B * T, 3, S, S)).reshape(B, T, -1)
        cached = model.encode_video_from_features(feats, mask)
        feats[~mask] = float("nan")  # whatever a cache stores at padded positions is ignored
        assert torch.equal(model.encode_video_from_features(feats, mask), cached)
    assert feats.shape == (B, T, model.video.feature_dim)
    torch.testing.assert_close(direct, cached, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temporal", ["transformer", "xclip"])
def test_gradients_reach_every_trainable_parameter(temporal, clips):
    model = _model(temporal).train()
    tok = model.tokenize(["left ventricle normal", "pericardial effusion"])
    v = model.encode_video(clips, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    t = model.encode_text(**tok)
    logits = model.logit_scale.exp() * v @ t.T
    loss = (F.cross_entropy(logits, torch.arange(B)) + F.cross_entropy(logits.T, torch.arange(B))) / 2
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0) and ".pooler." not in n]
    assert no_grad == []


def test_freeze_backbone_keeps_it_fixed(clips):
    model = _model("mean")
    model.freeze_backbone()
    model.train()
    assert not model.video.backbone.training and model.video.temporal.training
    model.encode_video(clips).sum().backward()
    assert all(p.grad is None for p in model.video.backbone.parameters())
    assert model.video_proj.weight.grad is not None


def test_determinism_under_seed(clips):
    a, b = _model().eval(), _model().eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    with torch.no_grad():
        assert torch.equal(a.encode_video(clips), b.encode_video(clips))


def test_text_pooling_variants_and_long_text():
    seed_everything(0)
    texts = ["mitral valve prolapse", "normal biventricular function"]
    outs = {}
    for pooling in ("cls", "mean", "last_n_mean"):
        m = create_model({"text_pooling": pooling, "temporal": "mean"}, pretrained=False).eval()
        with torch.no_grad():
            outs[pooling] = m.text(**m.tokenize(texts))
        assert outs[pooling].shape == (2, 384)
    assert not torch.allclose(outs["cls"], outs["mean"])
    assert not torch.allclose(outs["mean"], outs["last_n_mean"])
    long = "The left ventricle is normal in size. " * 80  # ~700 tokens > max_length 128
    emb = m.encode_long_text([long, "short"])
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        single = m.encode_text(**m.tokenize(["short"]))
    torch.testing.assert_close(emb[1:], single, atol=1e-5, rtol=1e-5)


def test_unknown_temporal_and_pooling_are_errors():
    with pytest.raises(ValueError, match="unknown temporal"):
        create_temporal("lstm", 8)
    with pytest.raises(ValueError, match="unknown text pooling"):
        create_model({"text_pooling": "max", "temporal": "mean"}, pretrained=False)
