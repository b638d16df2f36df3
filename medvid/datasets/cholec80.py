"""Cholec80-layout surgical datasets: videos plus per-frame phase and per-second tool annotations.

Layout (formats.md)::

    ROOT/videos/video01.mp4                       25 fps
    ROOT/phase_annotations/video01-phase.txt      "Frame\\tPhase", one line per frame (phase names)
    ROOT/tool_annotations/video01-tool.txt        "Frame\\tGrasper\\t...", every 25th frame, 0/1

A plain folder of videos (no annotations) also works, for prediction only. Labels are looked up
by time: a time maps to the last annotated frame at or before it (annotation frames are at
``annotation_fps``). Times after the annotations end get label ``-1`` and a warning; length
mismatches between annotations and video are reported with numbers by ``check()``.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Sequence

import numpy as np

from medvid.errors import MedvidError
from medvid.io.video import VIDEO_EXTS, Video
from medvid.io.timing import times_to_indices
from medvid.vocab import AUTOLAPARO_PHASES, CHOLEC80_PHASES, CHOLEC80_TOOLS

log = logging.getLogger("medvid")

# Standard splits by name: subset -> inclusive (first, last) video numbers.
SPLITS: dict[str, dict[str, tuple[int, int]]] = {
    "cholec80_40_40": {"train": (1, 40), "test": (41, 80)},
    "cholec80_40_8_32": {"train": (1, 40), "val": (41, 48), "test": (49, 80)},
    "autolaparo_10_4_7": {"train": (1, 10), "val": (11, 14), "test": (15, 21)},
}

# Dataset presets: phase vocabulary and the annotation conventions of each public dataset.
DATASETS = {
    "cholec80": dict(phases=CHOLEC80_PHASES, tools=CHOLEC80_TOOLS),
    "autolaparo": dict(phases=AUTOLAPARO_PHASES, tools=()),
}


def split_ranges(split: str) -> list[tuple[int, int]]:
    """Inclusive video-number ranges of a named split: ``"cholec80_40_8_32:test"`` -> ``[(49, 80)]``; a scheme
    alone (``"cholec80_40_40"``) gives every range it uses."""
    scheme, _, subset = split.partition(":")
    if scheme not in SPLITS:
        raise MedvidError(f"unknown split {scheme!r}; known: {sorted(SPLITS)}")
    ranges = SPLITS[scheme]
    if subset and subset not in ranges:
        raise MedvidError(f"split {scheme!r} has no subset {subset!r}; it has {sorted(ranges)}")
    return [ranges[subset]] if subset else list(ranges.values())


@dataclass(frozen=True)
class Annotation:
    """Labels at annotated frames: ``frames`` (int64, increasing) and ``labels`` ((N,) or (N, K))."""

    frames: np.ndarray
    labels: np.ndarray


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def video_number(name: str) -> int | None:
    """Trailing number of a video name (``video07`` -> 7), or None."""
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


class Cholec80:
    """Reader for a Cholec80-layout root (or AutoLaparo with ``dataset="autolaparo"``).

    ``phases``/``tools`` override the vocabularies; phase files may hold names (Cholec80) or
    integers (``phase_index_base`` says whether they count from 0 or 1).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "cholec80",
        phases: Sequence[str] | None = None,
        tools: Sequence[str] | None = None,
        annotation_fps: float = 25.0,
        phase_index_base: int = 0,
    ):
        if dataset not in DATASETS:
            raise MedvidError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise MedvidError(f"{self.root}: not a folder")
        self.dataset = dataset
        self.phases: tuple[str, ...] = tuple(phases or DATASETS[dataset]["phases"])
        self.tools: tuple[str, ...] = tuple(tools if tools is not None else DATASETS[dataset]["tools"])
        self.annotation_fps = float(annotation_fps)
        self.phase_index_base = phase_index_base
        video_dir = self.root / "videos"
        self.video_dir = video_dir if video_dir.is_dir() else self.root
        self._videos = {
            p.stem: p for p in sorted(self.video_dir.iterdir()) if p.suffix.lower() in VIDEO_EXTS and p.is_file()
        }
        self._phase_lookup = {_norm(p): i for i, p in enumerate(self.phases)}
        self._cache: dict[tuple[str, str], Annotation] = {}
        self._warned: set[tuple[str, str]] = set()

    # ---- videos and splits --------------------------------------------------------------
    def videos(self, split: str | None = None) -> list[str]:
        """Video names, optionally restricted to a named split (``"cholec80_40_8_32:test"``).

        A split name alone (``"cholec80_40_40"``) selects every video the split uses.
        """
        names = sorted(self._videos, key=lambda n: (video_number(n) is None, video_number(n) or 0, n))
        if split is None:
            return names
        chosen = split_ranges(split)
        return [n for n in names if (k := video_number(n)) is not None and any(a <= k <= b for a, b in chosen)]

    def split_hint(self, split: str) -> str:
        """Why ``split`` selects nothing here: the video numbers it takes and the numbers the folder holds."""
        wanted = ", ".join(f"{a}-{b}" for a, b in split_ranges(split))
        found = sorted({k for n in self._videos if (k := video_number(n)) is not None})
        runs = [[k for _, k in run] for _, run in groupby(enumerate(found), lambda pair: pair[1] - pair[0])]
        held = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs) or "none"
        return f"{split} takes video numbers {wanted}; the folder holds video numbers {held}"

    def video_path(self, name: str) -> Path:
        try:
            return self._videos[name]
        except KeyError:
            raise MedvidError(f"{self.root}: no video named {name!r}") from None

    def open(self, name: str, **kwargs) -> Video:
        return Video(self.video_path(name), **kwargs)

    def phase_file(self, name: str) -> Path:
        return self.root / "phase_annotations" / f"{name}-phase.txt"

    def tool_file(self, name: str) -> Path:
        return self.root / "tool_annotations" / f"{name}-tool.txt"

    def has_annotations(self, name: str) -> bool:
        """True when the video has a phase annotation file."""
        return self.phase_file(name).is_file()

    def has_tool_annotations(self, name: str) -> bool:
        return bool(self.tools) and self.tool_file(name).is_file()

    # ---- annotations --------------------------------------------------------------------
    def phase_annotation(self, name: str) -> Annotation:
        """Per-frame phase indices (into ``self.phases``) as written in the phase file."""
        key = (name, "phase")
        if key not in self._cache:
            self._cache[key] = self._read_phases(self.phase_file(name))
        return self._cache[key]

    def tool_annotation(self, name: str) -> Annotation:
        """Tool presence (N, len(tools)) at the annotated frames."""
        key = (name, "tool")
        if key not in self._cache:
            self._cache[key] = self._read_tools(self.tool_file(name))
        return self._cache[key]

    def phases_at(self, name: str, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Phase index at each time (s); ``-1`` where the annotation has ended."""
        return self._labels_at(name, "phase", self.phase_annotation(name), times)

    def tools_at(self, name: str, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Tool presence ``(N, len(tools))`` at each time (s); rows of ``-1`` after the annotation ends."""
        return self._labels_at(name, "tool", self.tool_annotation(name), times)

    def _labels_at(self, name: str, kind: str, ann: Annotation, times) -> np.ndarray:
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        ts = ann.frames / self.annotation_fps
        idx = times_to_indices(t, ts)
        out = ann.labels[idx].copy()
        step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0 / self.annotation_fps
        beyond = t >= ts[-1] + step - 1e-9
        if beyond.any():
            out[beyond] = -1
            if (name, kind) not in self._warned:
                self._warned.add((name, kind))
                log.warning("%s: %d of %d requested times are after the %s annotation ends (%.2f s); labelled -1",
                            name, int(beyond.sum()), len(t), kind, ts[-1] + step)
        return out

    def _read_table(self, path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
        if not path.is_file():
            raise MedvidError(f"{path}: annotation file not found")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MedvidError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        lines = text.splitlines()
        if not lines:
            raise MedvidError(f"{path}: empty annotation file")
        header = lines[0].split()
        if not header or header[0].lower() != "frame":
            raise MedvidError(f"{path}:1: expected a header starting with 'Frame', got {lines[0][:60]!r}")
        rows = []
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = line.split("\t") if "\t" in line else line.split()
            if len(cells) != len(header):
                raise MedvidError(f"{path}:{lineno}: expected {len(header)} columns, got {len(cells)}")
            try:
                rows.append((int(cells[0]), [c.strip() for c in cells[1:]]))
            except ValueError:
                raise MedvidError(f"{path}:{lineno}: frame number {cells[0]!r} is not an integer") from None
        if not rows:
            raise MedvidError(f"{path}: no annotation rows")
        frames = [r[0] for r in rows]
        bad = next((i for i in range(1, len(frames)) if frames[i] <= frames[i - 1]), None)
        if bad is not None:
            raise MedvidError(f"{path}: frame numbers not increasing at data row {bad + 1} ({frames[bad - 1]} -> {frames[bad]})")
        return header, rows

    def _read_phases(self, path: Path) -> Annotation:
        _, rows = self._read_table(path)
        labels = np.empty(len(rows), np.int64)
        for i, (_, (value,)) in enumerate(rows):
            labels[i] = self._phase_index(value, path, i + 2)
        return Annotation(np.array([r[0] for r in rows], np.int64), labels)

    def _phase_index(self, value: str, path: Path, lineno: int) -> int:
        if value.lstrip("-").isdigit():
            k = int(value) - self.phase_index_base
            if 0 <= k < len(self.phases):
                return k
            raise MedvidError(f"{path}:{lineno}: phase number {value} outside 0..{len(self.phases) - 1} "
                              f"(phase_index_base={self.phase_index_base})")
        k = self._phase_lookup.get(_norm(value))
        if k is None:
            raise MedvidError(f"{path}:{lineno}: unknown phase {value!r}; expected one of {list(self.phases)}")
        return k

    def _read_tools(self, path: Path) -> Annotation:
        header, rows = self._read_table(path)
        cols = {_norm(h): j for j, h in enumerate(header[1:])}
        missing = [t for t in self.tools if _norm(t) not in cols]
        if missing:
            raise MedvidError(f"{path}:1: tool columns missing: {missing}")
        order = [cols[_norm(t)] for t in self.tools]
        labels = np.empty((len(rows), len(self.tools)), np.int64)
        for i, (_, cells) in enumerate(rows):
            try:
                labels[i] = [int(cells[j]) for j in order]
            except ValueError:
                raise MedvidError(f"{path}:{i + 2}: tool values must be 0/1 integers") from None
        return Annotation(np.array([r[0] for r in rows], np.int64), labels)

    # ---- consistency --------------------------------------------------------------------
    def check(self, names: Sequence[str] | None = None, tolerance_s: float = 1.0) -> list[dict]:
        """Problems found, one dict per problem (never fixed silently).

        Reports unreadable videos and annotation files, and annotations whose length differs from
        the video's by more than ``tolerance_s`` (with frame counts and seconds).
        """
        problems: list[dict] = []
        for name in names if names is not None else self.videos():
            try:
                with self.open(name) as v:
                    video_s, n_video = v.duration, v.n_frames
            except MedvidError as exc:
                problems.append({"video": name, "kind": "video_unreadable", "error": str(exc)})
                continue
            for kind, exists, get in (("phase", self.has_annotations(name), self.phase_annotation),
                                      ("tool", self.has_tool_annotations(name), self.tool_annotation)):
                if not exists:
                    continue
                try:
                    ann = get(name)
                except MedvidError as exc:
                    problems.append({"video": name, "kind": f"{kind}_unreadable", "error": str(exc)})
                    continue
                step = int(np.median(np.diff(ann.frames))) if len(ann.frames) > 1 else 1
                ann_s = (int(ann.frames[-1]) + step) / self.annotation_fps
                if abs(ann_s - video_s) > tolerance_s:
                    problems.append({
                        "video": name, "kind": f"{kind}_length_mismatch",
                        "annotation_s": round(ann_s, 3), "video_s": round(video_s, 3),
                        "annotation_last_frame": int(ann.frames[-1]), "video_frames": n_video,
                        "diff_s": round(ann_s - video_s, 3),
                    })
                    log.warning("%s: %s annotations cover %.2f s but the video lasts %.2f s (%+.2f s)",
                                name, kind, ann_s, video_s, ann_s - video_s)
        return problems
