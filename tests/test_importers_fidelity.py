"""Imported published checkpoints compute what their authors' code computes.

Each test builds a state dict in the publisher's layout from facts read in the publisher's code
(key names, shapes, extra top-level entries, prefixes), with random weights, saves it the way the
publisher saves it (``torch.save`` of that object), imports it with medvid under
``weights_only=True`` and compares the output with a small re-implementation of the publisher's
forward written here from their code -- never with medvid's own builders. Then the imported model
goes through medvid's checkpoint format and must give the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medvid.errors import MedvidError
from medvid.models import importers as imp
from medvid.models.backbones import preprocess_for
from medvid.models.checkpoint import load_pretrained, read_config
from model_testdata import echoprime_reference, random_weights, surgvlp_checkpoint, surgvlp_reference_text

TOL = dict(rtol=1e-5, atol=1e-5)


def _round_trip(model: nn.Module, tmp_path) -> nn.Module:
    out = model.save_pretrained(tmp_path / "medvid_model")
    back = load_pretrained(out)
    assert type(back) is type(model) and back.pretrained_cfg == model.pretrained_cfg
    return back


# --- EchoNet-Dynamic (echonet/utils/video.py) -------------------------------------------------
def _echonet_reference():
    """torchvision r2plus1d_18 with fc -> Linear(512, 1), wrapped in DataParallel before saving."""
    from torchvision.models.video import r2plus1d_18

    model = r2plus1d_18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model


def test_echonet_dynamic_released_layout(tmp_path):
    ref = random_weights(_echonet_reference, 0)
    wrapped = nn.DataParallel(ref)
    optim = torch.optim.SGD(wrapped.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    wrapped(torch.randn(1, 3, 8, 16, 16)).sum().backward()
    optim.step()  # momentum buffers in opt_dict, as after training
    scheduler = torch.optim.lr_scheduler.StepLR(optim, 15)
    ref.eval()
    save = {"epoch": 45, "state_dict": wrapped.state_dict(), "period": 2, "frames": 32, "best_loss": 28.4,
            "loss": 27.9, "r2": np.float64(0.81), "opt_dict": optim.state_dict(),
            "scheduler_dict": scheduler.state_dict()}
    assert all(k.startswith("module.") for k in save["state_dict"])
    path = tmp_path / "r2plus1d_18_32_2_pretrained.pt"
    torch.save(save, path)
    with pytest.raises(Exception, match="numpy"):  # the defect this importer works around
        torch.load(path, weights_only=True)

    mean, std = [32.0, 32.5, 33.0], [50.0, 50.5, 51.0]
    with pytest.raises(MedvidError, match="mean"):
        imp.import_echonet_dynamic(path)
    got = imp.import_echonet_dynamic(path, mean=mean, std=std)
    x = torch.randn(2, 3, 8, 16, 16)
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(got(x), want, **TOL)
        torch.testing.assert_close(_round_trip(got, tmp_path)(x), want, **TOL)
    c = got.pretrained_cfg
    assert (c.num_frames, c.frame_stride, c.input_size, c.channel_order) == (32, 2, 112, "RGB")
    assert list(c.mean) == mean and list(c.std) == std
    from medvid.cli import app

    r = CliRunner().invoke(app, ["import", "echonet", str(path), "--out", str(tmp_path / "cli"),
                                 "mean=[32.0,32.5,33.0]", "std=[50.0,50.5,51.0]"])
    assert r.exit_code == 0, r.output
    assert read_config(tmp_path / "cli")["kind"] == "echonet_dynamic"
    assert read_config(tmp_path / "cli")["pretrained_cfg"]["mean"] == mean


def test_numpy_scalar_written_by_numpy_1(tmp_path, monkeypatch):
    """The released file was pickled by numpy 1: its scalar constructor is ``numpy.core.multiarray.scalar``."""
    from numpy._core.multiarray import scalar

    monkeypatch.setattr(scalar, "__module__", "numpy.core.multiarray")  # pickle then writes the numpy 1 name
    path = tmp_path / "old.pt"
    torch.save({"state_dict": {}, "r2": np.float64(0.81)}, path)
    monkeypatch.undo()
    assert b"numpy.core.multiarray" in path.read_bytes()
    assert imp.load_weights_only(path, numpy_scalars=True)["r2"] == pytest.approx(0.81)


def test_numpy_allowance_is_only_scalars(tmp_path):
    """Only the numpy scalar constructor and dtype are admitted: a numpy array in the file is still refused."""
    path = tmp_path / "array.pt"
    torch.save({"state_dict": {}, "r2": np.zeros(3)}, path)
    with pytest.raises(MedvidError, match="weights-only"):
        imp.load_weights_only(path, numpy_scalars=True)


# --- PanEcho (src/models.py, hubconf.py, content/tasks.md) ------------------------------------
def _sinusoid(clip_len: int) -> torch.Tensor:
    """PositionalEncoding(768, max_len=clip_len).pe as saved: ``[1, clip_len, 768]``."""
    pos = torch.arange(clip_len).unsqueeze(1)
    div = torch.exp(torch.arange(0, 768, 2) * (-math.log(10000.0) / 768))
    pe = torch.zeros(clip_len, 1, 768)
    pe[:, 0, 0::2], pe[:, 0, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe.permute(1, 0, 2)


class _RefFrameTransformer(nn.Module):
    """FrameTransformer('convnext_tiny', 8 heads, 4 layers, dropout 0, 'mean', clip_len)."""

    def __init__(self, clip_len: int):
        super().__init__()
        from torchvision.models import convnext_tiny

        self.encoder = nn.Module()
        self.encoder.model = convnext_tiny(weights=None)
        self.encoder.model.classifier[-1] = nn.Identity()
        layer = nn.TransformerEncoderLayer(d_model=768, nhead=8, dim_feedforward=768, dropout=0.0,
                                           activation="relu", batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers=4)
        self.time_encoder = nn.Module()
        self.time_encoder.pe = nn.Parameter(_sinusoid(clip_len), requires_grad=False)

    def forward(self, x):
        b, c, l, h, w = x.shape
        emb = self.encoder.model(x.reshape(b * l, c, h, w)).reshape(b, l, 768)  # no permute, as published
        return self.transformer(emb + self.time_encoder.pe[0, :l, :]).mean(1)


PANECHO_TASKS = {"EF": ("regression", 1), "LVSystolicFunction": ("multi-class_classification", 3),
                 "pericardial-effusion": ("binary_classification", 1),
                 "LVOT20mmHg": ("binary_classification", 1)}
PANECHO_INVERTED = {"MVStenosis", "AVStructure", "RASize", "RVSystolicFunction", "LVWallThickness-increased-modsev",
                    "LVWallThickness-increased-any", "pericardial-effusion"}


class _RefPanEcho(nn.Module):
    """MultiTaskModel(FrameTransformer, 768, tasks, fc_dropout=0.25, activations=True)."""

    def __init__(self, clip_len: int = 16):
        super().__init__()
        self.encoder = _RefFrameTransformer(clip_len)
        for task, (_, n) in PANECHO_TASKS.items():
            self.add_module(task + "_head", nn.Sequential(nn.Dropout(p=0.25), nn.Linear(768, n)))

    def forward(self, x):
        x = self.encoder(x)
        out = {}
        for task, (kind, _) in PANECHO_TASKS.items():
            y = self.get_submodule(task + "_head")(x)
            if kind == "binary_classification":
                out[task] = 1 - torch.sigmoid(y) if task in PANECHO_INVERTED else torch.sigmoid(y)
            elif kind == "multi-class_classification":
                out[task] = torch.softmax(y, dim=1)
            else:
                out[task] = y
        return out


def test_panecho_forward_and_activations(tmp_path):
    ref = random_weights(_RefPanEcho, 1)
    with torch.no_grad():  # the saved pe is the sinusoid (to_empty/fill_random overwrote it)
        ref.encoder.time_encoder.pe.copy_(_sinusoid(16))
    path = tmp_path / "panecho.pt"
    torch.save({"weights": ref.state_dict()}, path)
    got = imp.import_panecho(path)
    assert got.task_types == {"EF": "regression", "LVSystolicFunction": "multiclass",
                              "pericardial-effusion": "binary", "LVOT20mmHg": "binary"}
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        want, out = ref(x), got(x)
        assert set(out) == set(want)
        for task in want:
            torch.testing.assert_close(out[task], want[task], **TOL)
        back = _round_trip(got, tmp_path)(x)
        for task in want:
            torch.testing.assert_close(back[task], want[task], **TOL)
        permuted = got.encoder.encoder(x.permute(0, 2, 1, 3, 4).reshape(16, 3, 32, 32))
        assert not torch.allclose(permuted, got.encoder.encoder(x.reshape(16, 3, 32, 32)))
    assert 0 <= float(out["pericardial-effusion"]) <= 1 and torch.allclose(out["LVSystolicFunction"].sum(1),
                                                                            torch.ones(1))


def test_panecho_input_contract_is_bgr_imagenet():
    """An RGB clip through the recorded contract equals PanEcho's: BGR, /255, ImageNet mean/std in that order."""
    c = imp.PANECHO_PRETRAINED_CFG
    assert (c.num_frames, c.frame_stride, c.input_size, c.channel_order) == (16, 1, 224, "BGR")
    rgb = torch.randint(0, 256, (3, 2, 224, 224)).float()
    bgr01 = rgb.flip(0) / 255
    want = (bgr01 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    torch.testing.assert_close(preprocess_for(c)(rgb), want, rtol=1e-4, atol=1e-4)
    frames = rgb.permute(1, 2, 3, 0).to(torch.uint8).numpy()
    torch.testing.assert_close(preprocess_for(c).from_frames(frames), want, rtol=1e-4, atol=1e-4)


# --- SurgVLP / HecVL / PeskaVLP (surgvlp/codes/models/backbones, tests/config_*.py) -----------
def test_surgvlp_text_pooling_and_image_path(tmp_path):
    from medvid.models.text import default_text_model_path, load_tokenizer

    path, image, bert = surgvlp_checkpoint(tmp_path)
    tokenizer = load_tokenizer(default_text_model_path())
    got = imp.import_surgvlp(path, tokenizer_path=default_text_model_path())
    texts = ["I use the clipper to clip the cystic duct", "laparoscopic cholecystectomy: gallbladder dissection",
             "hemostasis"]
    tok = got.tokenize(texts)
    assert tok["input_ids"].shape == (3, 77)  # the reference pads every text to 77 tokens
    idxtoword = {v: k for k, v in tokenizer.get_vocab().items()}
    assert any(idxtoword[i].startswith("##") for i in tok["input_ids"].flatten().tolist())  # word pieces merged
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = surgvlp_reference_text(bert, idxtoword, tok["input_ids"], tok["attention_mask"])
        torch.testing.assert_close(got.encode_text(**tok, normalize=False), want, **TOL)
        torch.testing.assert_close(got.encode_frames(x), image(x), **TOL)
        back = _round_trip(got, tmp_path)
        torch.testing.assert_close(back.encode_text(**back.tokenize(texts), normalize=False), want, **TOL)
        clip = x.permute(1, 0, 2, 3).unsqueeze(0)  # the 2 frames as one clip [1, 3, 2, H, W]
        torch.testing.assert_close(back.encode_video(clip, normalize=False), image(x).mean(0, keepdim=True), **TOL)
    assert got.logit_scale.exp().item() == pytest.approx(10.0)


def test_import_command_then_zero_shot_phase(tmp_path):
    """``medvid import surgvlp`` -> ``medvid zero-shot phase`` end to end (random weights, tiny inputs)."""
    import json

    from medvid.cli import app
    from medvid.config import load_config
    from medvid.models.text import default_text_model_path
    from medvid.pipelines import synth_surgery

    path, _, _ = surgvlp_checkpoint(tmp_path, seed=3)
    data = tmp_path / "surgery"
    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", overrides=[
        f"out={data}", "videos=1", "seed=3", "duration_scale=0.3", "height=96", "width=128"]))
    runner = CliRunner()
    model_dir = tmp_path / "surgvlp_medvid"
    r = runner.invoke(app, ["import", "surgvlp", str(path), "--out", str(model_dir),
                            f"tokenizer_path={default_text_model_path()}"])
    assert r.exit_code == 0, r.output
    assert read_config(model_dir)["kind"] == "surgvlp" and (model_dir / "text").is_dir()
    meta = read_config(model_dir)
    meta["pretrained_cfg"]["input_size"] = 64  # keep the CPU test small
    (model_dir / "config.json").write_text(json.dumps(meta))
    r = runner.invoke(app, ["zero-shot", "phase", str(data), "--model", str(model_dir), "--out", str(tmp_path / "zs"),
                            "fps=0.2", "plots=false"])
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "zs" / "predictions").glob("*.csv"))
    r = runner.invoke(app, ["import", "nope", str(path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "family must be one of" in r.output


# --- EchoPrime (echo_prime/model.py, utils/utils.py) -----------------------------------------
@pytest.mark.slow
def test_echoprime_video_encoder(tmp_path):
    ref = random_weights(echoprime_reference, 4)
    path = tmp_path / "echo_prime_encoder.pt"
    torch.save(ref.state_dict(), path)
    got = imp.import_echoprime_video_encoder(path)
    x = torch.randn(1, 3, 16, 224, 224)  # mViT-v2-S is fixed to 16 x 224 x 224
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(got(x), want, **TOL)
        torch.testing.assert_close(_round_trip(got, tmp_path)(x), want, **TOL)


def test_echoprime_view_classifier(tmp_path):
    from torchvision.models import convnext_base

    def reference():
        model = convnext_base(weights=None)
        model.classifier[-1] = nn.Linear(1024, 11)
        return model

    ref = random_weights(reference, 5)
    path = tmp_path / "view_classifier.pt"
    torch.save(ref.state_dict(), path)
    got = imp.import_echoprime_view_classifier(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x), **TOL)
    assert got.pretrained_cfg.num_frames == 1


def _ref_crop_and_scale(img: np.ndarray, zoom: float = 0.1) -> np.ndarray:
    """utils.crop_and_scale to 224² (cv2.INTER_CUBIC: a = -0.75 bicubic, uint8 out; torch's bicubic here)."""
    h, w = img.shape[:2]
    if w / h > 1:
        pad = int(round((w - h) / 2))
        img = img[:, pad:-pad]
    elif w / h < 1:
        pad = int(round((h - w) / 2))
        img = img[pad:-pad]
    pad_x, pad_y = round(int(img.shape[1] * zoom)), round(int(img.shape[0] * zoom))
    img = img[pad_y:-pad_y, pad_x:-pad_x]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    out = nn.functional.interpolate(t, size=(224, 224), mode="bicubic", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)


def test_echoprime_exact_preset_pads_after_normalisation():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 60, 80, 3), dtype=np.uint8)  # a loop shorter than 32 frames
    x = np.stack([_ref_crop_and_scale(f) for f in frames]).astype(np.float32)
    ref = torch.as_tensor(x).permute(3, 0, 1, 2)
    ref = (ref - torch.tensor([29.110628, 28.076836, 29.096405]).view(3, 1, 1, 1)) / torch.tensor(
        [47.989223, 46.456997, 47.20083]).view(3, 1, 1, 1)
    ref = torch.cat([ref, torch.zeros(3, 22, 224, 224)], 1)[:, 0:32:2]
    got = imp.echoprime_clip(frames)
    assert got.shape == (3, 16, 224, 224)
    torch.testing.assert_close(got, ref, **TOL)
    assert torch.count_nonzero(got[:, 5:]) == 0  # frames 10..31 are zeros after normalisation
    wrapped = imp.echoprime_clip(frames, exact=False)  # medvid's default: the loop wraps around
    assert wrapped.shape == (3, 16, 224, 224) and torch.count_nonzero(wrapped[:, 5:]) > 0
    assert imp.ECHOPRIME_PRETRAINED_CFG.short_clip == "zero_pad_after_norm"
