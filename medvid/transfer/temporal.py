"""A temporal head over per-second embeddings in the MS-TCN / TeCNO manner, trained on frozen features.

``DilatedTCN`` is one MS-TCN stage: a 1×1 convolution in, ``layers`` residual blocks of 3-tap
convolutions with dilation 1, 2, 4, … (receptive field ``2^(layers+1) − 1`` samples), a 1×1
convolution out. ``causal=True`` pads on the left only (TeCNO's online setting); the default sees
the whole video (offline, as MS-TCN). Phases train with cross-entropy plus MS-TCN's truncated MSE
smoothing loss on neighbouring log-probabilities; tools (multi-label) with binary cross-entropy.
The epoch with the best validation score is kept.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _DilatedResidual(nn.Module):
    def __init__(self, channels: int, dilation: int, causal: bool, dropout: float):
        super().__init__()
        self.pad = (2 * dilation, 0) if causal else (dilation, dilation)
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.out = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.out(F.relu(self.conv(F.pad(x, self.pad)))))


class DilatedTCN(nn.Module):
    """``[B, D, T] -> [B, C, T]`` logits (one MS-TCN stage)."""

    def __init__(self, in_dim: int, n_classes: int, channels: int = 64, layers: int = 8, causal: bool = False,
                 dropout: float = 0.3):
        super().__init__()
        self.inp = nn.Conv1d(in_dim, channels, 1)
        self.blocks = nn.Sequential(*[_DilatedResidual(channels, 2 ** i, causal, dropout) for i in range(layers)])
        self.head = nn.Conv1d(channels, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.inp(x)))


def smoothing_loss(logits: Tensor, tau: float = 4.0) -> Tensor:
    """MS-TCN's truncated MSE between log-probabilities of neighbouring samples (``[1, C, T]``)."""
    logp = F.log_softmax(logits, dim=1)
    diff = (logp[:, :, 1:] - logp[:, :, :-1].detach()) ** 2
    return torch.clamp(diff, max=tau ** 2).mean()


def train_tcn(train: Sequence[tuple[np.ndarray, np.ndarray]], val: Sequence[tuple[np.ndarray, np.ndarray]],
              n_classes: int, val_score: Callable[[list[np.ndarray]], float], multilabel: bool = False,
              epochs: int = 60, lr: float = 5e-4, channels: int = 64, layers: int = 8, causal: bool = False,
              smooth_weight: float = 0.15, seed: int = 0) -> tuple[DilatedTCN, float]:
    """Train on ``(features [T, D], labels [T] or [T, C])`` sequences (label −1 = unannotated); returns the
    model of the epoch whose ``val_score(predicted probabilities per val video)`` was highest, and that score."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DilatedTCN(train[0][0].shape[1], n_classes, channels, layers, causal)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    data = [(torch.from_numpy(x.T[None].astype(np.float32)), torch.from_numpy(np.asarray(y))) for x, y in train]
    best, best_score = copy.deepcopy(model.state_dict()), -np.inf
    for _ in range(epochs):
        model.train()
        for i in rng.permutation(len(data)):
            x, y = data[i]
            logits = model(x)
            if multilabel:
                keep = (y >= 0).all(dim=1)
                loss = F.binary_cross_entropy_with_logits(logits[0].T[keep], y[keep].float())
            else:
                loss = F.cross_entropy(logits[0].T, y.long(), ignore_index=-1)
                loss = loss + smooth_weight * smoothing_loss(logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = val_score(predict_tcn(model, [x for x, _ in val], multilabel))
        if score > best_score:
            best, best_score = copy.deepcopy(model.state_dict()), score
    model.load_state_dict(best)
    return model.eval(), float(best_score)


@torch.no_grad()
def predict_tcn(model: DilatedTCN, sequences: Sequence[np.ndarray], multilabel: bool = False) -> list[np.ndarray]:
    """Probabilities ``[T, C]`` per sequence (softmax for phases, sigmoid for tools)."""
    model.eval()
    out = []
    for x in sequences:
        logits = model(torch.from_numpy(x.T[None].astype(np.float32)))[0].T
        out.append((torch.sigmoid(logits) if multilabel else logits.softmax(-1)).numpy())
    return out
