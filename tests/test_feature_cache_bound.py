"""Caching frame features keeps each backbone call to ``FRAME_CHUNK`` frames (issue 27 item 9: 8 echo clips of
17 frames in one call peaked at 3.3 GB), with the same features as one call per batch."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medvid.training.feature_cache import FRAME_CHUNK, build_feature_cache, cache_clips, dataset_clips


class _Counting(nn.Module):
    """A tiny frame backbone that records the most frames it was given in one call."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.most = 0

    def forward(self, x):
        self.most = max(self.most, len(x))
        return self.net(x)


def test_cache_calls_the_backbone_with_bounded_frames(tmp_path):
    torch.manual_seed(0)
    frames = FRAME_CHUNK // 2 + 1
    data = [{"video": torch.rand(3, frames, 16, 16)} for _ in range(6)]
    keys = [f"vi_{i}" for i in range(6)]
    backbone = _Counting()
    cache = cache_clips(backbone, 4, data, keys, tmp_path / "c", {"t": 1}, n_frames=frames, batch_size=6,
                        progress=False)
    assert 0 < backbone.most <= FRAME_CHUNK < 6 * frames  # one batch holds more frames than one call may
    whole = build_feature_cache(backbone.net, keys, dataset_clips(data, lambda item: (item["video"], None)),
                                tmp_path / "w", {"t": 1}, n_frames=frames, feature_dim=4, batch_size=6,
                                progress=False)
    np.testing.assert_allclose(np.asarray(cache.features, np.float32), np.asarray(whole.features, np.float32),
                               atol=1e-3)
