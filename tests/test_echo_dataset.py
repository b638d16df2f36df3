"""Clip transforms and the echo datasets (lazy decoding, time-based sampling, study batching)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvid.transforms.clip import PRESETS, ClipPreprocess, resolve_preprocess, to_clip_tensor


def test_to_clip_tensor_layout_and_scale():
    frames = np.random.default_rng(0).integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)
    clip = to_clip_tensor(frames)
    assert clip.shape == (3, 4, 10, 12) and clip.dtype == torch.float32
    assert clip[1, 2, 3, 4].item() == frames[2, 3, 4, 1]
    with pytest.raises(ValueError):
        to_clip_tensor(frames[..., 0])


def test_echoprime_preset_crop_zoom_and_normalisation():
    pre = ClipPreprocess.from_preset("echoprime")
    assert PRESETS["echoprime"]["n_frames"] == 16 and PRESETS["echoprime"]["frame_stride"] == 2
    assert pre.crop_box(480, 640) == (384, 384)  # centre 480² square, 10 % off each side
    clip = torch.empty(3, 2, 48, 64)
    for c, v in enumerate((29.110628, 100.0, 0.0)):
        clip[c] = v
    out = pre(clip)
    assert type(out) is torch.Tensor and out.shape == (3, 2, 224, 224)
    assert torch.allclose(out[0], torch.zeros(()), atol=1e-5)
    assert torch.allclose(out[1], torch.tensor((100 - 28.076836) / 46.456997), atol=1e-4)
    assert torch.allclose(out[2], torch.tensor(-29.096405 / 47.20083), atol=1e-4)


def test_center_square_keeps_the_middle():
    clip = torch.zeros(3, 1, 40, 80)
    clip[:, :, :, 20:60] = 255.0  # the central 40x40 square is white, the sides black
    out = ClipPreprocess(size=16, crop="center_square", mean=(0, 0, 0), std=(1, 1, 1))(clip)
    assert out.min() > 250  # nothing of the black sides got in
    out = ClipPreprocess(size=16, crop="none", mean=(0, 0, 0), std=(1, 1, 1))(clip)
    assert out.min() < 5


def test_imagenet_presets_match_timm():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN

    assert np.allclose(PRESETS["imagenet"]["mean"], np.array(IMAGENET_DEFAULT_MEAN) * 255)
    assert np.allclose(PRESETS["imagenet"]["std"], np.array(IMAGENET_DEFAULT_STD) * 255)
    assert np.allclose(PRESETS["imagenet_inception"]["mean"], np.array(IMAGENET_INCEPTION_MEAN) * 255)
    assert isinstance(resolve_preprocess("imagenet"), ClipPreprocess)
    with pytest.raises(ValueError):
        resolve_preprocess("nope")
