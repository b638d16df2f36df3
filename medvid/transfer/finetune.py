"""Fine-tuning on frozen-backbone features: a copy of the model's temporal module and video projection
plus a linear head, trained end to end on cached frame features (the backbone never runs again).

Regression (EF) as EchoNet-Dynamic trains it: one random ``clip_frames`` window per video and step,
MSE on standardised targets; the prediction of a video is the mean over all its windows. The epoch
with the lowest validation MAE is kept.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvid.transfer.features import clip_starts


class TemporalRegressor(nn.Module):
    """Temporal module + projection (copied from a ``VideoTextModel``) + ``Linear(embed_dim, 1)``."""

    def __init__(self, model: Any):
        super().__init__()
        self.temporal = copy.deepcopy(model.video.temporal)
        self.proj = copy.deepcopy(model.video_proj)
        self.head = nn.Linear(model.embed_dim, 1)

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        x = self.temporal(feats.masked_fill(~mask.unsqueeze(-1), 0), mask)
        return self.head(F.normalize(self.proj(x), dim=-1)).squeeze(-1)


def _windows(feats: Tensor, mask: Tensor, starts: np.ndarray, clip_frames: int) -> tuple[Tensor, Tensor]:
    n_valid = int(mask.sum())
    idx = torch.from_numpy(starts[:, None] + np.arange(clip_frames)[None, :]).clamp_max(feats.shape[0] - 1)
    return feats[idx], mask[idx] & (idx < n_valid)


@torch.no_grad()
def predict_videos(net: TemporalRegressor, videos: Sequence[tuple[Tensor, Tensor]], clip_frames: int,
                   step: int = 1) -> np.ndarray:
    """Mean prediction over every window of each ``(feats [T, F], mask [T])`` video (beat-to-beat)."""
    net.eval()
    out = []
    for feats, mask in videos:
        w, m = _windows(feats, mask, clip_starts(int(mask.sum()), clip_frames, step), clip_frames)
        out.append(float(torch.cat([net(w[i:i + 64], m[i:i + 64]) for i in range(0, len(w), 64)]).mean()))
    return np.asarray(out)


def finetune_regression(model: Any, train: Sequence[tuple[Tensor, Tensor]], y: np.ndarray,
                        val: Sequence[tuple[Tensor, Tensor]], y_val: np.ndarray, clip_frames: int = 32,
                        epochs: int = 30, batch_size: int = 16, lr: float = 1e-4, head_lr: float = 1e-3,
                        seed: int = 0) -> tuple[TemporalRegressor, float, float, float, int]:
    """Train; returns ``(net, target mean, target sd, best validation MAE, best epoch)``. Predictions
    on the target scale are ``predict_videos(net, ...) * sd + mean``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = TemporalRegressor(model)
    mu, sd = float(np.mean(y)), float(np.std(y) or 1.0)
    target = torch.tensor((np.asarray(y) - mu) / sd, dtype=torch.float32)
    opt = torch.optim.AdamW([{"params": list(net.temporal.parameters()) + list(net.proj.parameters()), "lr": lr},
                             {"params": net.head.parameters(), "lr": head_lr}], weight_decay=1e-4)
    best = (copy.deepcopy(net.state_dict()), float("inf"), -1)
    for epoch in range(epochs):
        net.train()
        for b in np.array_split(rng.permutation(len(train)), max(1, int(np.ceil(len(train) / batch_size)))):
            pairs = []
            for i in b:
                feats, mask = train[i]
                starts = clip_starts(int(mask.sum()), clip_frames)
                pairs.append(_windows(feats, mask, starts[rng.integers(len(starts))][None], clip_frames))
            x, m = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            loss = F.mse_loss(net(x, m), target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        mae = float(np.mean(np.abs(predict_videos(net, val, clip_frames, step=4) * sd + mu - y_val)))
        if mae < best[1]:
            best = (copy.deepcopy(net.state_dict()), mae, epoch)
    net.load_state_dict(best[0])
    return net.eval(), mu, sd, best[1], best[2]
