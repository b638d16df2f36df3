"""Label-free, transductive calibration of zero-shot scores over one video's samples.

A video-text model often scores one class prompt higher than the others on *every* frame (the
prompt sits nearer the frames' common direction), so that class swallows the others. Two cures
that use only the video's own frames, never labels:

* ``prior``: logit adjustment by the video's predicted class marginal,
  ``logits − strength · log(mean_t softmax(logits))`` — a class predicted everywhere is damped,
  one predicted nowhere is lifted. With ``strength < 1`` a video that is one phase throughout keeps
  its label wherever the model is right by a logit margin above ``strength / (1 − strength) · log T``
  (``T`` samples): the marginal of a class is at least ``e^(−margin)/T`` of the sample that
  scores it best, so the adjustment cannot close a larger margin.
* ``centre``: subtract ``strength`` × the video's mean embedding from each embedding before scoring
  (removes the shared direction; ``strength = 1`` would erase a one-phase video's signal, so keep it below 1).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("none", "prior", "centre")


def prior_adjust(logits: torch.Tensor, strength: float) -> torch.Tensor:
    """``[T, C]`` logits adjusted by ``strength`` × the log of their own predicted class marginal."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"prior calibration strength must be in [0, 1), got {strength}")
    if len(logits) == 0 or strength == 0.0:
        return logits
    log_marginal = torch.logsumexp(logits.log_softmax(dim=-1), dim=0) - np.log(len(logits))
    return logits - strength * log_marginal


def centre(emb: torch.Tensor, strength: float) -> torch.Tensor:
    """Normalised ``emb − strength · mean(normalised emb)`` (the video's shared direction removed)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"centre calibration strength must be in [0, 1), got {strength}")
    e = F.normalize(emb.float(), dim=-1)
    if len(e) == 0 or strength == 0.0:
        return e
    return F.normalize(e - strength * e.mean(dim=0, keepdim=True), dim=-1)


def calibrate_logits(emb: torch.Tensor, logits_fn, method: str = "none", strength: float = 0.5) -> torch.Tensor:
    """Logits ``[T, C]`` of one video's embeddings under ``method`` (``METHODS``); ``logits_fn`` maps
    embeddings to logits (a head's ``logits``)."""
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {METHODS}, got {method!r}")
    if method == "centre":
        return logits_fn(centre(emb, strength))
    logits = logits_fn(emb)
    return prior_adjust(logits, strength) if method == "prior" else logits
