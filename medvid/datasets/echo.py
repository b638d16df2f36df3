"""Echo cine-loop clips over an ingest output.

Rows come from ``DIR/videos.parquet`` (pseudonymous keys only); files are found through the local
key file written by ``medvid ingest`` (or a ``path`` column when ingest ran with ``keep_paths``).
Loops are DICOM files or video files (``medvid.io.echo_videos.open_loop``; ``dicom_root`` is then
the video folder's root). Each item decodes only the frames of its clip (``frames(indices)``), chosen
by time through ``medvid.io.timing`` so 30 and 60 fps loops give clips of equal duration.
Loops shorter than the clip wrap around (cine loops are cyclic), or are zero-padded after
normalisation when the model's contract says so (EchoPrime's reference). A model may also take a motion
image as one extra last frame (``medvid.transforms.clip.with_motion_image``). Which frames and which mask is
a ``medvid.transforms.contract.Sampling``; ``EchoVideoDataset.for_model`` feeds a model what its
``pretrained_cfg`` records (``Sampling.recorded``, and size, crop, mean/std through ``model.preprocess()``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medvid.errors import MedvidError
from medvid.io.echo_videos import open_loop
from medvid.io.ingest_folder import IngestFolder
from medvid.io.reader import VideoReader
from medvid.io.regions import LAYOUTS, blank_outside_box, blank_outside_mask, clip_box, estimate_sector_mask, fan_mask
from medvid.io.sectors import SectorStore
from medvid.transforms.clip import PRESETS, ClipPreprocess, resolve_preprocess, to_clip_tensor, with_motion_image
from medvid.transforms.contract import Sampling
from medvid.io.timing import clip_times, cycle_span, frame_timestamps, span_times, times_to_indices
from medvid.utils import resolve_under

STARTS = ("begin", "center", "random", "r_wave")


def clip_indices(cine: VideoReader, num_frames: int, fps: float | None = None,
                 frame_stride: int | None = None, start: str = "begin", rng: np.random.Generator | None = None,
                 default_fps: float = 30.0, cycles: int = 1, wrap: bool = True) -> np.ndarray:
    """Frame indices of a ``num_frames`` clip at ``fps`` (or every ``frame_stride``-th native frame).
    Past the end of a short loop the clip wraps around, or (``wrap=False``) gets index -1.

    ``start``: ``begin`` (EchoPrime's convention), ``center``, ``random`` (training), or ``r_wave``:
    ``num_frames`` spread evenly over ``cycles`` whole cardiac cycles from the first R wave (falling back to
    the heart rate, then to the whole loop: ``medvid.io.timing.cycle_span``); ``fps`` and
    ``frame_stride`` do not apply then.
    """
    timestamps = cine.timestamps if cine.timestamps is not None else frame_timestamps(cine.n_frames, fps=default_fps)
    native = cine.fps or default_fps
    fps = float(fps) if fps else native / float(frame_stride or 1)
    step = 1.0 / native
    duration = float(timestamps[-1]) + step
    if start == "r_wave":
        t0, t1, _ = cycle_span(duration, getattr(cine, "r_wave_times", None), getattr(cine, "heart_rate", None),
                               cycles)
        return times_to_indices(span_times(t0, t1, num_frames), timestamps)
    span = num_frames / fps
    slack = max(duration - span, 0.0)
    if start == "begin":
        t0 = 0.0
    elif start == "center":
        t0 = slack / 2
    elif start == "random":
        t0 = float((rng or np.random.default_rng()).uniform(0, slack)) if slack > 0 else 0.0
    else:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    times = clip_times(num_frames, fps, t0)
    if wrap:
        return times_to_indices(np.mod(times, duration), timestamps)  # loops shorter than the clip repeat
    inside = times < duration - 1e-6  # float slack: a time at the loop's end is past it
    return np.where(inside, times_to_indices(np.where(inside, times, 0.0), timestamps), -1)


def load_clip(cine: VideoReader, indices: np.ndarray, mask: str = "box",
              sector_box: Sequence[int] | None = None, preprocess: ClipPreprocess | None = None,
              regions: Sequence[dict] | None = None, fan: "LoopFan | None" = None) -> torch.Tensor:
    """Decode ``indices`` only, blank everything outside the sector, preprocess → ``(3, T, H, W)`` float.

    ``mask``: ``fan`` (the loop's fan, ``LoopFan``: given, else estimated from these frames with
    ``medvid.io.regions.fan_mask``: the fan of each 2-D region, M-mode and spectral regions whole, else the
    moving pixels' fan, else the box), ``box`` (the ingest's sector box), ``pixels`` (moving pixels of this
    clip, else the box) or ``none``. Without ``preprocess`` the clip stays at full size on the 0–255 scale.
    """
    frames = cine.frames(indices)  # a fresh array: masked in place
    if mask == "fan":
        keep = fan(indices, frames) if fan is not None else fan_mask(frames, regions, sector_box)[0]
        if keep is not None:
            blank_outside_mask(frames, keep)
        return preprocess.from_frames(frames) if preprocess is not None else to_clip_tensor(frames)
    keep = estimate_sector_mask(frames) if mask == "pixels" else None
    box = clip_box(sector_box, cine.rows, cine.cols) if sector_box is not None and len(sector_box) == 4 else None
    if keep is not None:
        blank_outside_mask(frames, keep)
    elif mask != "none" and box is not None:
        blank_outside_box(frames, box)
    return preprocess.from_frames(frames) if preprocess is not None else to_clip_tensor(frames)


# The frames a loop's fan is estimated from, once per loop: EchoPrime's clip (16 frames, every 2nd native
# frame, from the start, wrapping), so masks are those of the clips the published models are fed.
SECTOR_FRAMES, SECTOR_STRIDE = 16, 2


@dataclass
class LoopFan:
    """The fan mask of one loop (``medvid.io.regions.fan_mask`` of its ``SECTOR_FRAMES`` reference frames),
    read from ``store`` (``medvid.io.sectors.SectorStore``, beside the ingest) or estimated once and put there.

    Called as ``fan(indices, frames)`` with the frames a reader just decoded: when they are the reference
    frames they are reused, else the reference frames are decoded (once per loop).
    """

    store: SectorStore
    video_key: str
    cine: VideoReader
    regions: Sequence[dict] | None = None
    sector_box: Sequence[int] | None = None
    default_fps: float = 30.0

    def __call__(self, indices: np.ndarray | None = None, frames: np.ndarray | None = None) -> np.ndarray | None:
        rows, cols = self.cine.rows, self.cine.cols
        stored = self.store.get(self.video_key, rows, cols)
        if stored is not None:
            return stored[0]
        ref = clip_indices(self.cine, SECTOR_FRAMES, None, SECTOR_STRIDE, "begin", default_fps=self.default_fps)
        if frames is None or indices is None or not np.array_equal(indices, ref):
            frames = self.cine.frames(ref)
        mask, source = fan_mask(frames, self.regions, self.sector_box)
        self.store.put(self.video_key, mask, source, rows, cols)
        return mask


class EchoVideoDataset(Dataset):
    """One item per cine loop: ``{"video": (3, T, H, W), "video_key", "study_key", "view"}``.

    ``sampling`` (``medvid.transforms.contract.Sampling``) says which frames a clip holds and how they are
    masked; None = the preset's sampling when ``preprocess`` names one (EchoPrime: 16 frames, every 2nd
    native frame), else 16 consecutive native frames. A ``motion="std"`` sampling appends a motion image as
    frame ``num_frames`` (so clips have ``num_frames + 1`` frames). ``preprocess`` is a ``ClipPreprocess``,
    a preset name (``PRESETS``) or None (raw 0–255 frames). ``layouts`` keeps only loops of those layouts
    (``medvid.io.regions.LAYOUTS``, e.g. ``["2d", "color_doppler"]``). ``start="r_wave"`` samples ``cycles``
    whole cardiac cycles (see ``clip_indices``). Loops the ingest flagged ``no_sector`` (nothing locates the
    image, so burned-in text cannot be blanked) are left out unless the mask is ``none`` or
    ``keep_unmasked=True``. The fan mask of a loop is estimated at most once per ingest folder and kept in
    its ``sectors.jsonl`` (``LoopFan``, ``medvid.io.sectors``): later reads, epochs and jobs reuse it.
    """

    def __init__(self, ingest_dir: str | os.PathLike, dicom_root: str | os.PathLike, sampling: Sampling | None = None,
                 preprocess: ClipPreprocess | str | None = "echoprime", start: str = "begin",
                 split: str | Sequence[str] | None = None, views: Sequence[str] | None = None,
                 default_fps: float = 30.0, seed: int | None = None, layouts: Sequence[str] | None = None,
                 cycles: int = 1, keep_unmasked: bool = False) -> None:
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if sampling is None:
            sampling = Sampling.of_preset(preprocess) if isinstance(preprocess, str) and preprocess in PRESETS \
                else Sampling()
        self.sampling = sampling
        self.preprocess = resolve_preprocess(preprocess)
        self.start, self.default_fps, self.cycles = start, default_fps, int(cycles)
        self.ingest_dir, self.dicom_root = Path(ingest_dir), Path(dicom_root)
        videos = _filter(IngestFolder(self.ingest_dir).read_videos(), split, views, layouts)
        if sampling.mask != "none" and not keep_unmasked and "no_sector" in videos:
            videos = videos[~videos["no_sector"].fillna(False).astype(bool)]
        self.videos = videos.reset_index(drop=True)
        self._paths = (dict(zip(self.videos["video_key"], self.videos["path"])) if "path" in self.videos
                       else IngestFolder(self.ingest_dir).video_paths())
        self._rng = np.random.default_rng(seed)
        self.sectors = SectorStore(self.ingest_dir)

    @classmethod
    def for_model(cls, ingest_dir: str | os.PathLike, dicom_root: str | os.PathLike, model: Any,
                  sampling: Sampling | None = None, **kwargs: Any) -> "EchoVideoDataset":
        """Loops as ``model`` was trained to see them: ``sampling`` (default: the one its ``pretrained_cfg``
        records, ``Sampling.recorded``), size/crop/mean/std/channel order through ``model.preprocess()``.
        Other arguments as the constructor."""
        return cls(ingest_dir, dicom_root, sampling or Sampling.recorded(model.pretrained_cfg),
                   preprocess=model.preprocess(), **kwargs)

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, row: pd.Series) -> torch.Tensor:
        """The clip of one ``videos`` row (decodes only the frames it uses)."""
        rel = self._paths.get(row["video_key"])
        if rel is None:
            raise MedvidError(f"video {row['video_key']}: not in the ingest's key file")
        try:
            cine = open_loop(resolve_under(self.dicom_root, rel))
        except (OSError, MedvidError) as exc:
            raise MedvidError(f"video {row['video_key']}: cannot open its file ({type(exc).__name__})") from exc
        s = self.sampling
        box, regions = row.get("sector_box"), row.get("regions")
        with cine:
            idx = clip_indices(cine, s.num_frames, s.fps, s.frame_stride, self.start, self._rng,
                               self.default_fps, self.cycles, wrap=s.short_clip == "wrap")
            box = None if box is None else list(box)
            regions = json.loads(regions) if isinstance(regions, str) else None
            fan = LoopFan(self.sectors, row["video_key"], cine, regions, box, self.default_fps) \
                if s.mask == "fan" else None
            clip = load_clip(cine, idx[idx >= 0], s.mask, box, self.preprocess, regions, fan)
        real = clip.shape[1]
        if (idx < 0).any():  # zeros after normalisation past the end of a short loop (positions are at the end)
            clip = torch.cat([clip, clip.new_zeros(clip.shape[0], int((idx < 0).sum()), *clip.shape[2:])], 1)
        return with_motion_image(clip, s.motion, real)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.videos.iloc[i]
        return {"video": self.clip(row), "video_key": row["video_key"], "study_key": row["study_key"],
                "view": str(row.get("view") or "")}




def _filter(df: pd.DataFrame, split: str | Sequence[str] | None, views: Sequence[str] | None,
            layouts: Sequence[str] | None = None) -> pd.DataFrame:
    if split:
        df = df[df["split"].isin([split] if isinstance(split, str) else list(split))]
    if views:
        df = df[df["view"].isin(list(views))]
    if layouts:
        unknown = sorted(set(layouts) - set(LAYOUTS))
        if unknown:
            raise ValueError(f"unknown layout(s) {unknown}; known: {list(LAYOUTS)}")
        if "layout" not in df:
            raise MedvidError("this ingest has no layout column: re-run `medvid ingest` to filter by layout")
        df = df[df["layout"].isin(list(layouts))]
    return df
