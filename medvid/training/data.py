"""Training datasets over cached features: echo studies (videos + sectioned report) and lecture clip–text pairs.

Items are dicts of fixed-shape tensors (padded, with masks), so the default collate batches
them and the objectives in :mod:`medvid.training.objectives` consume them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from medvid.training.feature_cache import FeatureCache, TextFeatureCache
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS


class ClipSource:
    """Decoded clips by key, for full fine-tuning: ``source[key] -> (clip [3,T,H,W], frame_mask [T])``.

    Wraps a dataset whose items carry ``"video"`` and whose ``i``-th key is ``keys[i]``.
    Datasets over a ``ClipSource`` emit ``clips``; over a :class:`FeatureCache`, ``feats``.
    """

    kind = "clips"

    def __init__(self, dataset: Dataset, keys: Sequence[str]):
        self.dataset, self.index = dataset, {k: i for i, k in enumerate(keys)}

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __getitem__(self, key: str) -> tuple[Tensor, Tensor]:
        clip = self.dataset[self.index[key]]["video"]
        return clip, torch.ones(clip.shape[1], dtype=torch.bool)


VideoSource = FeatureCache | ClipSource


def _kind(source: VideoSource) -> str:
    return getattr(source, "kind", "feats")


SPLITS = ("train", "val", "test")


@dataclass
class EchoStudy:
    """One study as training sees it (pseudonymous keys only)."""

    study_key: str
    split: str
    video_keys: list[str]
    report: str
    sections: dict[str, str]
    views: list[str | None] = field(default_factory=list)  # known view per video (None = unknown)


def load_echo_studies(ingest_dir: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15,
                      seed: int = 0) -> list[EchoStudy]:
    """Studies of an ingest folder (``videos.parquet`` + ``reports.csv``) that have a report,
    with their videos in file order and the known view of each (``views.csv`` joined by ingest).
    Studies without an ingest split are held out by whole patient (else study), seeded, as train-views does."""
    from medvid.io.ingest_folder import IngestFolder
    from medvid.io.reports import parse_sections

    videos = IngestFolder(ingest_dir).read_videos()
    reports = IngestFolder(ingest_dir).read_reports()
    out, group = [], {}
    for key, report, split in zip(reports["study_key"], reports["report"], reports["split"]):
        rows = videos[videos["study_key"] == key]
        if rows.empty or not str(report).strip():
            continue
        out.append(EchoStudy(key, str(split or (rows["split"].iloc[0] if "split" in rows else "")),
                             rows["video_key"].tolist(), str(report), parse_sections(str(report)),
                             [v or None for v in rows["view"].tolist()]))
        patient = rows["patient_key"].iloc[0] if "patient_key" in rows else None
        group[key] = patient if isinstance(patient, str) and patient else key
    unsplit = [s for s in out if s.split not in SPLITS]
    if unsplit:
        split_of = group_splits([group[s.study_key] for s in unsplit], val_fraction, test_fraction, seed)
        for s in unsplit:
            s.split = split_of[group[s.study_key]]
    return out


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


class TokenSource:
    """Texts → fixed-length tokens ``{"ids": [N,L], "attn": [N,L]}`` (trainable text tower)."""

    def __init__(self, tokenize: Callable[..., dict[str, Tensor]], max_length: int):
        self.tokenize, self.max_length = tokenize, max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        enc = self.tokenize(list(texts), max_length=self.max_length)
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        attn = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        n = enc["input_ids"].shape[1]
        ids[:, :n], attn[:, :n] = enc["input_ids"], enc["attention_mask"]
        return {"ids": ids, "attn": attn}


TextSource = TextFeatureCache | TokenSource


def text_fields(source: TextSource, texts: Sequence[str]) -> dict[str, Tensor]:
    """``{"feats": [N,F]}`` from a feature cache or ``{"ids", "attn"}`` from a token source."""
    return {"feats": source(texts)} if isinstance(source, TextFeatureCache) else source(texts)


def _padded(source: TextSource, texts: Sequence[str], slots: Sequence[int], n: int, prefix: str) -> dict[str, Tensor]:
    """Text fields for ``texts`` placed at rows ``slots`` of ``n`` zero rows, keys ``<prefix>_<field>``."""
    out = {}
    for k, v in text_fields(source, texts).items():
        full = v.new_zeros(n, *v.shape[1:])
        full[list(slots)] = v
        out[f"{prefix}_{k}"] = full
    return out


class EchoStudyFeatures(Dataset):
    """Studies → ``feats [V,T,F]`` (or ``clips [V,3,T,H,W]``), ``frame_mask [V,T]``, ``video_mask [V]``, ``view_probs [V,K]``,
    ``section_feats [S,Ft]``, ``section_mask [S]``, ``report_feats [Ft]`` (``S = len(sections)``).

    A study with more than ``max_videos`` videos keeps a fixed seeded subset of them.
    """

    def __init__(self, studies: Sequence[EchoStudy], cache: VideoSource, texts: TextSource,
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
        v = self.max_videos
        loaded = [(self.cache[key], view, key) for key, view in self._videos(i)]
        (x0, m0), _, _ = loaded[0]
        feats, fmask = x0.new_zeros(v, *x0.shape), torch.zeros(v, *m0.shape, dtype=torch.bool)
        vmask = torch.zeros(v, dtype=torch.bool)
        probs = torch.stack([known_view_probs(None)] * v)
        for j, ((x, m), view, key) in enumerate(loaded):
            feats[j], fmask[j], vmask[j] = x, m, True
            probs[j] = self.view_probs(key, view)
        present = [n for n in self.sections if s.sections.get(n)]
        smask = torch.tensor([bool(s.sections.get(n)) for n in self.sections])
        report = {f"report_{k}": v[0] for k, v in text_fields(self.texts, [s.report]).items()}
        return {_kind(self.cache): feats, "frame_mask": fmask, "video_mask": vmask, "view_probs": probs,
                "section_mask": smask, **report,
                **_padded(self.texts, [s.sections[n] for n in present], [self.sections.index(n) for n in present],
                          len(self.sections), "section")}


class LecturePairFeatures(Dataset):
    """Clip–text pairs → ``feats [T,F]`` (or ``clips [3,T,H,W]``), ``frame_mask [T]``, ``text_feats [P,Ft]``, ``text_mask [P]``.

    ``pairs[i]`` = (cache key, [anchor text, extra positive texts...]); at most ``max_texts`` kept.
    """

    def __init__(self, pairs: Sequence[tuple[str, list[str]]], cache: VideoSource, texts: TextSource,
                 max_texts: int = 3):
        self.pairs = [(k, [t for t in ts if t][:max_texts]) for k, ts in pairs if k in cache and ts and ts[0]]
        self.cache, self.texts, self.max_texts = cache, texts, max_texts

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        key, texts = self.pairs[i]
        feats, fmask = self.cache[key]
        tmask = torch.arange(self.max_texts) < len(texts)
        return {_kind(self.cache): feats, "frame_mask": fmask, "text_mask": tmask,
                **_padded(self.texts, texts, range(len(texts)), self.max_texts, "text")}


class LabelledClips(Dataset):
    """``(key, label)`` pairs → ``feats``/``clips``, ``frame_mask``, ``label`` (for the view classifier)."""

    def __init__(self, items: Sequence[tuple[str, int]], source: VideoSource):
        self.items = [(k, y) for k, y in items if k in source]
        self.source = source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        key, label = self.items[i]
        x, m = self.source[key]
        return {_kind(self.source): x, "frame_mask": m, "label": torch.tensor(label)}


def group_splits(groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, str]:
    """Whole groups (lectures, patients, studies) to train/val/test: a seeded shuffle of the sorted
    names, at least one group in each held-out split when there are three or more."""
    names = sorted(set(groups))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(names)
    n_test = max(1, round(test_fraction * n)) if n >= 3 and test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if n >= 3 and val_fraction > 0 else 0
    return {v: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, v in enumerate(order)}


class ClassBalanced(Dataset):
    """Class-balanced view of a labelled dataset: every class appears equally often per epoch
    (minority items repeated, a seeded draw), so the trainer's plain shuffle samples balanced batches."""

    def __init__(self, dataset: Dataset, labels: Sequence[int], seed: int = 0):
        labels = np.asarray(labels)
        classes = np.unique(labels)
        per_class = max(int((labels == c).sum()) for c in classes)
        rng = np.random.default_rng(seed)
        index = []
        for c in classes:
            members = np.flatnonzero(labels == c)
            extra = rng.choice(members, per_class - len(members), replace=True)
            index.extend(np.concatenate([members, extra]).tolist())
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.dataset[self.index[i]]
