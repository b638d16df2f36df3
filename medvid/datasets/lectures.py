"""Lecture clip-text pairs (SurgVLP style): the pairing rule and a torch ``Dataset`` over pairs.

Pairing rule (formats.md), per lecture and per anchor source: each anchor sentence's span is
widened symmetrically to at least ``min_span_s``; a clip of ``clip_s`` (drawn from a range, seeded)
is placed at random inside the span; sentences of the *other* sources overlapping the span are
extra positives (the ``max_extra`` with the most overlap), for MIL-NCE. At load time
``num_frames`` frames are taken at ``fps`` inside the clip.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medvid.errors import MedvidError
from medvid.io.transcripts import Transcript, find_transcripts, fit_to_duration, read_transcript
from medvid.io.video import VIDEO_EXTS, Video
from medvid.transforms.clip import ClipPreprocess, resolve_preprocess, to_clip_tensor
from medvid.io.timing import clip_times
from medvid.utils import read_jsonl, resolve_under

log = logging.getLogger("medvid")


@dataclass
class PairingRule:
    """Parameters of the reference pairing rule (defaults: SurgVLP's)."""

    min_span_s: float = 4.0
    clip_s: tuple[float, float] = (3.0, 5.0)
    max_extra: int = 2
    min_words: int = 3
    anchor_sources: tuple[str, ...] = ()  # empty: every source takes a turn as anchor
    transcript_tolerance_s: float = 2.0


def find_lectures(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Video files under ``root`` (sorted)."""
    root = Path(root)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def load_transcripts(video: Path, duration_s: float, tolerance_s: float) -> dict[str, Transcript]:
    """All transcripts beside ``video``, validated and checked against its length."""
    found = find_transcripts(video)
    if not found:
        raise MedvidError(f"{video}: no transcript found (expected {video.stem}.<source>.srt|vtt|json|csv)")
    return {src: fit_to_duration(read_transcript(p, source=src), duration_s, tolerance_s) for src, p in found.items()}


def _pair_id(video_rel: str, source: str, k: int) -> str:
    return hashlib.sha1(f"{video_rel}|{source}|{k}".encode()).hexdigest()[:16]


def pairs_for_lecture(video_rel: str, duration_s: float, transcripts: dict[str, Transcript], rule: PairingRule,
                      rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """Clip-text pairs of one lecture following ``rule``."""
    anchors = [s for s in (rule.anchor_sources or sorted(transcripts)) if s in transcripts]
    lo, hi = rule.clip_s
    for src in anchors:
        others = [t for name, t in sorted(transcripts.items()) if name != src]
        for k, seg in enumerate(transcripts[src].segments):
            if len(seg.text.split()) < rule.min_words:
                continue
            centre = (seg.start + seg.end) / 2
            half = max(seg.end - seg.start, rule.min_span_s) / 2
            a, b = max(0.0, centre - half), min(duration_s, centre + half)
            if b - a < rule.min_span_s:  # near the ends of the video: shift rather than shrink
                a, b = max(0.0, min(a, duration_s - rule.min_span_s)), min(duration_s, max(b, rule.min_span_s))
            clip_len = min(float(rng.uniform(lo, hi)), b - a)
            start = a + float(rng.uniform(0, (b - a) - clip_len))
            overl = [(min(b, o.end) - max(a, o.start), o.text, t.source) for t in others for o in t.overlapping(a, b)]
            overl.sort(key=lambda x: -x[0])
            extra = overl[: rule.max_extra]
            yield {"pair_id": _pair_id(video_rel, src, k), "video": video_rel, "source": src,
                   "start": round(start, 3), "end": round(start + clip_len, 3),
                   "span_start": round(a, 3), "span_end": round(b, 3), "text": seg.text,
                   "extra_texts": [e[1] for e in extra], "extra_sources": [e[2] for e in extra]}


class LecturePairDataset(Dataset):
    """Clip-text pairs from ``pairs.jsonl``; item: ``video`` (3, T, H, W) float, ``text``, ``extra_texts``, ``pair_id``.

    Frames: ``num_frames`` at ``fps`` from a start drawn inside the pair's clip (the clip's
    start when ``random_start=False``). ``augment`` is called as ``augment(clip, rng)`` with a
    per-item generator (``ClipAugment``), so items are the same for the same ``seed`` and ``epoch``.
    ``tokenizer(text)`` replaces ``text`` with its output when given.
    """

    def __init__(self, pairs_jsonl: str | os.PathLike, root: str | os.PathLike, num_frames: int = 4,
                 fps: float = 2.0, preprocess: ClipPreprocess | str | None = "imagenet",
                 augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
                 tokenizer: Callable[[str], Any] | None = None, seed: int = 0, random_start: bool = True,
                 open_videos: int = 4):
        self.pairs = read_jsonl(pairs_jsonl)
        self.root = Path(root)
        self.num_frames, self.fps = num_frames, fps
        self.preprocess = resolve_preprocess(preprocess)
        self.augment, self.tokenizer = augment, tokenizer
        self.seed, self.epoch, self.random_start = seed, 0, random_start
        self._open: OrderedDict[str, Video] = OrderedDict()
        self._max_open = open_videos
        self._pid = os.getpid()
        self._inherited: list[Video] = []

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws per epoch (still reproducible)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _video(self, rel: str) -> Video:
        if os.getpid() != self._pid:  # a forked DataLoader worker: open its own decoders, and never
            # free the parent's here (destroying an inherited decord reader crashes the child)
            self._inherited = list(self._open.values())
            self._open, self._pid = OrderedDict(), os.getpid()
        v = self._open.pop(rel, None) or Video(resolve_under(self.root, rel))
        self._open[rel] = v
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)[1].close()
        return v

    def frame_times(self, index: int, rng: np.random.Generator) -> np.ndarray:
        p = self.pairs[index]
        span = (self.num_frames - 1) / self.fps
        room = max(0.0, p["end"] - p["start"] - span)
        start = p["start"] + (float(rng.uniform(0, room)) if self.random_start else 0.0)
        return clip_times(self.num_frames, self.fps, start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        p = self.pairs[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        video = self._video(p["video"])
        times = np.minimum(self.frame_times(index, rng), video.duration - 1e-6)
        clip = self._clip(video.frames_at(times), rng)
        text = p["text"]
        return {"video": clip, "text": self.tokenizer(text) if self.tokenizer else text,
                "extra_texts": list(p.get("extra_texts", [])), "pair_id": p["pair_id"]}

    def _clip(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        clip = to_clip_tensor(frames)
        if self.augment is not None:
            clip = self.augment(clip, rng)
        return clip if self.preprocess is None else self.preprocess(clip)

    def iter_clips(self, indices: Sequence[int] | None = None, shard: tuple[int, int] = (0, 1),
                   read_frames: int = 64) -> Iterator[tuple[int, torch.Tensor]]:
        """``(index, item["video"])`` for ``indices`` (default: all), the same clips as ``self[index]``, decoded
        lecture by lecture: each video is opened once, read front to back with the sequential decoder (no
        random-access reader, no seeks back for overlapping clips) ``read_frames`` sampled frames at a time,
        and closed. Only the frames of clips still waiting are held, so memory does not grow with the corpus.
        Items come out grouped by video (videos in order of first appearance), by clip end inside a video.
        ``shard=(k, n)`` keeps every ``n``-th of those videos from the ``k``-th (one share per loader worker).
        """
        by_video: dict[str, list[int]] = {}
        for i in range(len(self)) if indices is None else indices:
            by_video.setdefault(self.pairs[i]["video"], []).append(int(i))
        for rel, items in list(by_video.items())[shard[0]::shard[1]]:
            with Video(resolve_under(self.root, rel), backend="pyav") as video:
                yield from self._video_clips(video, items, read_frames)

    def _video_clips(self, video: Video, items: list[int], read_frames: int) -> Iterator[tuple[int, torch.Tensor]]:
        plan = []  # (last frame, index, frame indices, rng), emitted once its last frame is decoded
        for i in items:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = video.indices_at(np.minimum(self.frame_times(i, rng), video.duration - 1e-6))
            plan.append((int(idx.max()), i, idx, rng))
        plan.sort(key=lambda p: p[:2])
        wanted = np.unique(np.concatenate([p[2] for p in plan]))
        first_needed = np.minimum.accumulate([int(p[2].min()) for p in plan][::-1])[::-1]  # over clips not yet out
        held: dict[int, np.ndarray] = {}
        k = 0
        for start in range(0, len(wanted), read_frames):
            chunk = wanted[start:start + read_frames]
            held.update(zip(chunk.tolist(), video.frames(chunk)))
            while k < len(plan) and plan[k][0] <= chunk[-1]:
                _, i, idx, rng = plan[k]
                yield i, self._clip(np.stack([held[j] for j in idx.tolist()]), rng)
                k += 1
            if k < len(plan):
                held = {j: f for j, f in held.items() if j >= first_needed[k]}

    def __getstate__(self) -> dict:  # open decoders do not cross process boundaries (DataLoader workers)
        state = self.__dict__.copy()
        state["_open"], state["_inherited"] = OrderedDict(), []
        return state


def collate_pairs(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips; keep texts and the variable-length extra positives as lists."""
    out: dict[str, Any] = {"video": torch.stack([b["video"] for b in batch]),
                           "extra_texts": [b["extra_texts"] for b in batch],
                           "pair_id": [b["pair_id"] for b in batch]}
    texts = [b["text"] for b in batch]
    out["text"] = texts if isinstance(texts[0], str) else torch.utils.data.default_collate(texts)
    return out
