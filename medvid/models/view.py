"""View classifier: echo views (EchoPrime's 11 coarse views by default) or lecture frame types.

Frame level (``clip_level=False``): one frame in, logits out; given a clip, the per-frame logits
of the valid frames are averaged. Clip level: frame features are pooled by a temporal module
first. ``forward_features`` + ``head`` split the model so a head can train on cached features.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from medvid.models.checkpoint import Pretrained
from medvid.models.backbones import FrozenBackboneMixin, create_backbone, preprocess_for
from medvid.models.video import create_temporal, masked_mean, resolve_mask
from medvid.transforms.clip import ClipPreprocess
from medvid.transforms.contract import PretrainedCfg
from medvid.vocab import ECHO_VIEWS, LECTURE_FRAME_TYPES

LABEL_SETS: dict[str, tuple[str, ...]] = {"echo_views": ECHO_VIEWS, "lecture_frame_types": LECTURE_FRAME_TYPES}


def resolve_labels(labels: str | int | Sequence[str] | None) -> list[str]:
    """Label names from a label-set name, a class count (names "0".."n-1") or a list; None = ECHO_VIEWS."""
    if labels is None:
        return list(ECHO_VIEWS)
    if isinstance(labels, int):
        if labels < 2:
            raise ValueError(f"need at least 2 classes, got {labels}")
        return [str(i) for i in range(labels)]
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            raise ValueError(f"unknown label set '{labels}', expected one of {sorted(LABEL_SETS)} or a list of names")
        return list(LABEL_SETS[labels])
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be unique and non-empty: {list(labels)}")
    return list(labels)


class ViewClassifier(Pretrained, FrozenBackboneMixin, nn.Module):
    """Backbone (``[N,3,H,W] -> [N,F]``) + linear head over ``labels``.

    ``backbone`` is a module (e.g. from ``create_backbone``) or a timm name built with
    ``create_backbone(name, pretrained)``; ``labels`` a label-set name, a class count or names.
    """

    def __init__(self, backbone: nn.Module | str = "tf_efficientnet_lite0",
                 labels: str | int | Sequence[str] | None = None, clip_level: bool = False,
                 temporal: str = "mean", dropout: float = 0.2, pretrained: bool = True):
        super().__init__()
        self.labels = resolve_labels(labels)
        self.backbone = create_backbone(backbone, pretrained) if isinstance(backbone, str) else backbone
        self.clip_level = clip_level
        self.feature_dim: int = self.backbone.num_features
        self.temporal = create_temporal(temporal, self.feature_dim) if clip_level else None
        pooled = self.temporal.out_dim if clip_level else self.feature_dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, len(self.labels)))
        self.config: dict[str, Any] = {}
        self.pretrained_cfg = PretrainedCfg()

    def checkpoint_config(self) -> dict[str, Any]:
        """The config as saved: weights come from the folder, so no base-weight paths are kept."""
        return {**self.config, "pretrained": False, "backbone_checkpoint": None, "labels": list(self.labels)}

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def _frame_feats(self, x: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        b, _, t = x.shape[:3]
        frames = x.permute(0, 2, 1, 3, 4)
        mask = resolve_mask(frame_mask, frames)
        valid = self.backbone(frames[mask])
        feats = valid.new_zeros(b, t, valid.shape[-1])
        feats[mask] = valid
        return feats, mask

    def forward_features(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Features for the head: frames ``[B,3,H,W] -> [B,F]``; clips ``[B,3,T,H,W]`` -> pooled ``[B,F']``
        (clip level) or per-frame ``[B,T,F]`` (frame level)."""
        if x.ndim == 4:
            if self.clip_level:
                raise ValueError("a clip-level view classifier takes clips [B,3,T,H,W]")
            return self.backbone(x)
        if x.ndim != 5:
            raise ValueError(f"expected frames [B,3,H,W] or clips [B,3,T,H,W], got {tuple(x.shape)}")
        feats, mask = self._frame_feats(x, frame_mask)
        return self.temporal(feats, mask) if self.clip_level else feats

    def classify_features(self, feats: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Logits from (cached) features: ``[B,F]``, or ``[B,T,F]`` (+ mask) pooled by the temporal
        module (clip level) or by averaging per-frame logits (frame level)."""
        if feats.ndim == 2:
            return self.head(feats)
        mask = resolve_mask(frame_mask, feats)
        if self.clip_level:
            return self.head(self.temporal(feats, mask))
        return masked_mean(self.head(feats), mask)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        if x.ndim == 5:
            feats, mask = self._frame_feats(x, frame_mask)
            return self.classify_features(feats, mask)
        return self.classify_features(self.forward_features(x))

    def preprocess(self) -> ClipPreprocess:
        """The ``ClipPreprocess`` matching ``pretrained_cfg``."""
        return preprocess_for(self.pretrained_cfg)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        return self(x, frame_mask).softmax(-1)
