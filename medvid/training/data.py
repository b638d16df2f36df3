"""Training datasets over cached features: echo studies (videos + sectioned report) and lecture clip–text pairs.

Items are dicts of fixed-shape tensors (padded, with masks), so the default collate batches
them and the objectives in :mod:`medvid.training.objectives` consume them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from medvid.training.feature_cache import FeatureCache, TextFeatureCache
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS


@dataclass
class EchoStudy:
    """One study as training sees it (pseudonymous keys only)."""

    study_key: str
    split: str
    video_keys: list[str]
    report: str
    sections: dict[str, str]
    views: list[str | None] = field(default_factory=list)  # known view per video (None = unknown)


def known_view_probs(view: str | None, views: Sequence[str] = ECHO_VIEWS) -> Tensor:
    """One-hot over ``views`` for a known view; uniform when unknown."""
    if view is None or view not in views:
        return torch.full((len(views),), 1.0 / len(views))
    p = torch.zeros(len(views))
    p[list(views).index(view)] = 1.0
    return p


def text_tower_features(model, texts: Sequence[str], stride: int = 32) -> Tensor:
    """Pooled text-transformer features ``[N, F]`` (before projection) of texts of any length:
    overlapping ``max_length`` token windows, averaged per text."""
    batch, owner = model.text.tokenize_windows(texts, stride)
    device = model.logit_scale.device
    with torch.no_grad():
        feats = model.text(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
    out = torch.zeros(len(texts), feats.shape[-1]).index_add_(0, owner, feats)
    return out / torch.bincount(owner, minlength=len(texts)).clamp_min(1).unsqueeze(-1).float()


class EchoStudyFeatures(Dataset):
    """Studies → ``feats [V,T,F]``, ``frame_mask [V,T]``, ``video_mask [V]``, ``view_probs [V,K]``,
    ``section_feats [S,Ft]``, ``section_mask [S]``, ``report_feats [Ft]`` (``S = len(sections)``).

    A study with more than ``max_videos`` videos keeps a fixed seeded subset of them.
    """

    def __init__(self, studies: Sequence[EchoStudy], cache: FeatureCache, texts: TextFeatureCache,
                 view_probs: Callable[[str, str | None], Tensor], max_videos: int = 8,
                 sections: Sequence[str] = ECHO_SECTIONS, seed: int = 0):
        self.studies = [s for s in studies if any(k in cache for k in s.video_keys) and
                        any(s.sections.get(n) for n in sections)]
        self.cache, self.texts, self.view_probs = cache, texts, view_probs
        self.max_videos, self.sections, self.seed = max_videos, list(sections), seed

    def __len__(self) -> int:
        return len(self.studies)

    def _videos(self, i: int) -> list[tuple[str, str | None]]:
        s = self.studies[i]
        views = s.views or [None] * len(s.video_keys)
        pairs = [(k, v) for k, v in zip(s.video_keys, views) if k in self.cache]
        if len(pairs) > self.max_videos:
            keep = np.random.default_rng([self.seed, i]).choice(len(pairs), self.max_videos, replace=False)
            pairs = [pairs[j] for j in sorted(keep)]
        return pairs

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        s = self.studies[i]
        t, f = self.cache.features.shape[1:]
        v = self.max_videos
        feats, fmask = torch.zeros(v, t, f), torch.zeros(v, t, dtype=torch.bool)
        vmask = torch.zeros(v, dtype=torch.bool)
        probs = torch.stack([known_view_probs(None)] * v)
        for j, (key, view) in enumerate(self._videos(i)):
            feats[j], fmask[j] = self.cache[key]
            vmask[j] = True
            probs[j] = self.view_probs(key, view)
        present = [n for n in self.sections if s.sections.get(n)]
        sec = torch.zeros(len(self.sections), self.texts.features.shape[-1])
        sec[[self.sections.index(n) for n in present]] = self.texts([s.sections[n] for n in present])
        smask = torch.tensor([bool(s.sections.get(n)) for n in self.sections])
        return {"feats": feats, "frame_mask": fmask, "video_mask": vmask, "view_probs": probs,
                "section_feats": sec, "section_mask": smask, "report_feats": self.texts([s.report])[0]}


class LecturePairFeatures(Dataset):
    """Clip–text pairs → ``feats [T,F]``, ``frame_mask [T]``, ``text_feats [P,Ft]``, ``text_mask [P]``.

    ``pairs[i]`` = (cache key, [anchor text, extra positive texts...]); at most ``max_texts`` kept.
    """

    def __init__(self, pairs: Sequence[tuple[str, list[str]]], cache: FeatureCache, texts: TextFeatureCache,
                 max_texts: int = 3):
        self.pairs = [(k, [t for t in ts if t][:max_texts]) for k, ts in pairs if k in cache and ts and ts[0]]
        self.cache, self.texts, self.max_texts = cache, texts, max_texts

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        key, texts = self.pairs[i]
        feats, fmask = self.cache[key]
        tf = torch.zeros(self.max_texts, self.texts.features.shape[-1])
        tf[: len(texts)] = self.texts(texts)
        tmask = torch.arange(self.max_texts) < len(texts)
        return {"feats": feats, "frame_mask": fmask, "text_feats": tf, "text_mask": tmask}
