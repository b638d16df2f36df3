"""Echo datasets distributed as video files: the EchoNet-Dynamic layout, and video-file cine loops.

Layout (formats.md)::

    ROOT/Videos/<FileName>.avi        112×112 apical-4-chamber loops
    ROOT/FileList.csv                 FileName (with or without .avi), EF, ESV, EDV, FrameHeight,
                                      FrameWidth, FPS, NumberOfFrames, Split (TRAIN / VAL / TEST)
    ROOT/VolumeTracings.csv           FileName (with .avi), X1, Y1, X2, Y2, Frame: per traced frame
                                      the long axis, then the disk chords (end-systole and end-diastole)

``read_filelist`` / ``read_volume_tracings`` parse the tables (one clear ``MedvidError`` per unusable
table); ``inspect_video`` opens one file through ``medvid.io.video.Video`` and compares it with its
table row; ``open_loop`` opens a loop as a ``DicomCine`` or a ``Video`` by file name: both are
``medvid.io.reader.VideoReader``, so echo datasets read either.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.io.dicom import DicomCine
from medvid.io.reader import VideoReader
from medvid.io.regions import box_from_mask, estimate_sector_mask
from medvid.io.reports import SPLITS, read_table
from medvid.io.video import VIDEO_EXTS, Video

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEO_DIR = "Videos"
# FileList column -> medvid name; only FileName is required.
FILELIST_COLUMNS = {"EF": "ef", "ESV": "esv", "EDV": "edv", "FrameHeight": "frame_height",
                    "FrameWidth": "frame_width", "FPS": "fps", "NumberOfFrames": "n_frames"}
PHENOTYPES = ("ef", "esv", "edv")
_TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")


def file_stem(name: str) -> str:
    """``FileName`` as the published tables spell it (with or without ``.avi``) → the name without it."""
    name = str(name).strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def is_echonet_root(root: str | os.PathLike) -> bool:
    """True for a folder in the EchoNet-Dynamic layout (``FileList.csv`` beside ``Videos/``)."""
    return (Path(root) / FILELIST).is_file()


def _numeric(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    text = df[col].str.strip()
    values = pd.to_numeric(text.replace("", None), errors="coerce")
    bad = df.index[values.isna() & (text != "")].tolist()
    if bad:
        raise MedvidError(f"{path}: column {col!r} has non-numeric value(s) on data row(s) {[i + 1 for i in bad[:10]]}")
    return values.astype(float)


def read_filelist(path: str | os.PathLike) -> pd.DataFrame:
    """``FileList.csv`` → one row per video: ``name`` (no ``.avi``), ``ef``, ``esv``, ``edv``,
    ``frame_height``, ``frame_width``, ``fps``, ``n_frames`` (NaN when absent or blank) and ``split``
    (lower case; blank when the table has none)."""
    path = Path(path)
    df = read_table(path, ("FileName",))
    out = pd.DataFrame({"name": df["FileName"].map(file_stem)})
    blank = out.index[out["name"] == ""].tolist()
    if blank:
        raise MedvidError(f"{path}: empty FileName on data row(s) {[i + 1 for i in blank[:10]]}")
    dup = out["name"][out["name"].duplicated()].unique().tolist()
    if dup:
        raise MedvidError(f"{path}: {len(dup)} FileName value(s) listed twice, e.g. {dup[0]!r}")
    for col, name in FILELIST_COLUMNS.items():
        out[name] = _numeric(df, col, path) if col in df.columns else np.nan
    out["split"] = df["Split"].str.strip().str.lower() if "Split" in df.columns else ""
    bad = sorted(set(out["split"]) - set(SPLITS) - {""})
    if bad:
        raise MedvidError(f"{path}: Split must be TRAIN, VAL or TEST (or blank), got {bad}")
    return out


@dataclass(frozen=True)
class Tracing:
    """End-diastolic and end-systolic frames of one video and their traced volumes (pixels³, method of disks)."""

    ed_frame: int
    es_frame: int
    ed_volume_px: float
    es_volume_px: float


def disk_volume(lines: np.ndarray) -> float:
    """Single-plane method of disks on one traced frame: ``lines [n, 4]`` (x1, y1, x2, y2), the long
    axis first and the disk chords after it → ``Σ π/4 · d² · L / n_disks`` (pixels³)."""
    if len(lines) < 2:
        return float("nan")
    lengths = np.hypot(lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1])
    axis, chords = lengths[0], lengths[1:]
    return float(np.pi / 4 * np.sum(chords ** 2) * axis / len(chords))


def read_volume_tracings(path: str | os.PathLike) -> tuple[dict[str, Tracing], dict[str, str]]:
    """``VolumeTracings.csv`` → ``({name: Tracing}, {name: problem})``.

    Each video should have exactly two traced frames; the one with the larger disk volume is end-diastole.
    Videos with another number of traced frames land in the problems mapping (reported, not fatal).
    """
    path = Path(path)
    df = read_table(path, _TRACING_COLUMNS)
    for col in _TRACING_COLUMNS[1:]:
        df[col] = _numeric(df, col, path)
    if df[list(_TRACING_COLUMNS[1:])].isna().any().any():
        rows = df.index[df[list(_TRACING_COLUMNS[1:])].isna().any(axis=1)].tolist()
        raise MedvidError(f"{path}: blank coordinate or frame on data row(s) {[i + 1 for i in rows[:10]]}")
    df["name"] = df["FileName"].map(file_stem)
    tracings: dict[str, Tracing] = {}
    problems: dict[str, str] = {}
    for name, rows in df.groupby("name", sort=False):
        frames = list(dict.fromkeys(rows["Frame"].astype(int)))  # order of appearance
        if len(frames) != 2:
            problems[name] = f"{len(frames)} traced frame(s), expected 2 (end-systole and end-diastole)"
            continue
        vols = [disk_volume(rows.loc[rows["Frame"] == f, ["X1", "Y1", "X2", "Y2"]].to_numpy()) for f in frames]
        if any(np.isnan(v) for v in vols):
            problems[name] = "a traced frame has fewer than 2 lines (long axis and chords)"
            continue
        ed, es = (0, 1) if vols[0] >= vols[1] else (1, 0)
        tracings[name] = Tracing(frames[ed], frames[es], vols[ed], vols[es])
    return tracings, problems


def open_loop(path: str | os.PathLike) -> VideoReader:
    """A cine loop from a DICOM file (``DicomCine``) or, by extension (``VIDEO_EXTS``), a video file (``Video``),
    opened once; close it (or use it as a context manager) when done."""
    path = Path(path)
    return Video(path) if path.suffix.lower() in VIDEO_EXTS else DicomCine(path)


def inspect_video(path: str | os.PathLike, sector_frames: int = 8) -> dict[str, Any]:
    """Metadata of one video file (frames, fps, size, duration) and its sector box from moving pixels.

    Raises ``MedvidError`` (path and reason) when the file cannot be decoded; the last frame is decoded
    to catch truncation.
    """
    with Video(path) as loop:
        n = loop.n_frames
        idx = np.unique(np.linspace(0, n - 1, min(sector_frames, n)).astype(int))
        frames = loop.frames(np.append(idx, n - 1))
        fps, rows, cols = loop.fps, loop.rows, loop.cols
    mask = estimate_sector_mask(frames) if n >= 2 else None
    box = box_from_mask(mask) if mask is not None else None
    return {"frames": n, "fps": round(fps, 3), "fps_source": "container", "duration_s": n / fps,
            "rows": rows, "cols": cols, "sector_box": list(box) if box else None,
            "sector_source": "pixels" if box else "none", "container": Path(path).suffix.lower().lstrip(".")}


def table_mismatches(meta: dict[str, Any], row: pd.Series) -> list[str]:
    """Differences between a file's ``inspect_video`` metadata and its ``read_filelist`` row, with numbers."""
    out = []
    if not np.isnan(row["n_frames"]) and int(row["n_frames"]) != meta["frames"]:
        out.append(f"FileList NumberOfFrames {int(row['n_frames'])}, file has {meta['frames']} frames")
    for col, key, label in (("frame_height", "rows", "FrameHeight"), ("frame_width", "cols", "FrameWidth")):
        if not np.isnan(row[col]) and int(row[col]) != meta[key]:
            out.append(f"FileList {label} {int(row[col])}, file has {meta[key]}")
    if not np.isnan(row["fps"]) and abs(float(row["fps"]) - meta["fps"]) > 0.5:
        out.append(f"FileList FPS {row['fps']:g}, file has {meta['fps']:g}")
    return out


def find_video(video_dir: Path, name: str) -> Path | None:
    """The file of ``name`` in ``video_dir`` (``.avi`` first, then any ``VIDEO_EXTS``)."""
    for ext in (".avi", *VIDEO_EXTS):
        p = video_dir / f"{name}{ext}"
        if p.is_file():
            return p
    return None
