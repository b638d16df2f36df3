"""Echo datasets over an ingest output: cine-loop clips and whole studies with their reports.

Rows come from ``DIR/videos.parquet`` (pseudonymous keys only); files are found through the local
key file written by ``medvid ingest`` (or a ``path`` column when ingest ran with ``keep_paths``).
Loops are DICOM files or video files (``medvid.io.echo_videos.open_loop``; ``dicom_root`` is then
the video folder's root). Each item decodes only the frames of its clip (``frames(indices)``), chosen
by time through ``medvid.transforms.sampling`` so 30 and 60 fps loops give clips of equal duration.
Loops shorter than the clip wrap around (cine loops are cyclic), or are zero-padded after
normalisation when the model's contract says so (EchoPrime's reference). A model may also take a motion
image as one extra last frame (``medvid.transforms.clip.with_motion_image``). ``EchoVideoDataset.for_model``
feeds a model what its ``pretrained_cfg`` records (frames, fps or stride, mask, motion, size, mean/std).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medvid.errors import MedvidError
from medvid.io.dicom import DicomCine
from medvid.io.echo_videos import VideoLoop, open_loop
from medvid.io.ingest_folder import IngestFolder
from medvid.io.regions import LAYOUTS, blank_outside_box, clip_box, estimate_sector_mask, fan_mask
from medvid.io.reports import parse_sections
from medvid.transforms.clip import MOTIONS, PRESETS, ClipPreprocess, resolve_preprocess, to_clip_tensor, with_motion_image
from medvid.transforms.sampling import clip_times, cycle_span, frame_timestamps, span_times, times_to_indices
from medvid.utils import resolve_under

MASKS = ("fan", "box", "pixels", "none")
STARTS = ("begin", "center", "random", "r_wave")
SHORT_CLIPS = ("wrap", "zero_pad_after_norm")  # a loop shorter than the clip: repeat it, or zeros (EchoPrime)


def recorded_sampling(pretrained_cfg: Mapping[str, Any] | None, n_frames: int | None = None,
                      target_fps: float | None = None, frame_stride: int | None = None, mask: str | None = None,
                      short_clip: str | None = None, motion: str | None = None) -> dict[str, Any]:
    """``n_frames, target_fps, frame_stride, mask, short_clip, motion`` of the clips a model is fed: a setting
    given here wins, else what the model recorded (``pretrained_cfg``: ``num_frames``, ``fps`` or
    ``frame_stride``, ``mask``, ``short_clip``, ``motion``), else EchoPrime's sampling (16 frames, every 2nd
    native frame, fan mask, wrap, no motion image)."""
    c = dict(pretrained_cfg or {})
    if target_fps is None and frame_stride is None:
        target_fps, frame_stride = c.get("fps"), c.get("frame_stride")
        frame_stride = None if target_fps else int(frame_stride or 2)
    return {"n_frames": int(n_frames or c.get("num_frames") or 16), "target_fps": target_fps,
            "frame_stride": frame_stride, "mask": mask or c.get("mask") or "fan",
            "short_clip": short_clip or c.get("short_clip") or "wrap", "motion": motion or c.get("motion") or "none"}


def clip_indices(cine: DicomCine | VideoLoop, n_frames: int, target_fps: float | None = None,
                 frame_stride: int | None = None, start: str = "begin", rng: np.random.Generator | None = None,
                 default_fps: float = 30.0, cycles: int = 1, wrap: bool = True) -> np.ndarray:
    """Frame indices of an ``n_frames`` clip at ``target_fps`` (or every ``frame_stride``-th native frame).
    Past the end of a short loop the clip wraps around, or (``wrap=False``) gets index -1.

    ``start``: ``begin`` (EchoPrime's convention), ``center``, ``random`` (training), or ``r_wave``:
    ``n_frames`` spread evenly over ``cycles`` whole cardiac cycles from the first R wave (falling back to
    the heart rate, then to the whole loop: ``medvid.transforms.sampling.cycle_span``); ``target_fps`` and
    ``frame_stride`` do not apply then.
    """
    timestamps = cine.timestamps if cine.timestamps is not None else frame_timestamps(cine.n_frames, fps=default_fps)
    native = cine.fps or default_fps
    fps = float(target_fps) if target_fps else native / float(frame_stride or 1)
    step = 1.0 / native
    duration = float(timestamps[-1]) + step
    if start == "r_wave":
        t0, t1, _ = cycle_span(duration, getattr(cine, "r_wave_times", None), getattr(cine, "heart_rate", None),
                               cycles)
        return times_to_indices(span_times(t0, t1, n_frames), timestamps)
    span = n_frames / fps
    slack = max(duration - span, 0.0)
    if start == "begin":
        t0 = 0.0
    elif start == "center":
        t0 = slack / 2
    elif start == "random":
        t0 = float((rng or np.random.default_rng()).uniform(0, slack)) if slack > 0 else 0.0
    else:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    times = clip_times(n_frames, fps, t0)
    if wrap:
        return times_to_indices(np.mod(times, duration), timestamps)  # loops shorter than the clip repeat
    inside = times < duration - 1e-6  # float slack: a time at the loop's end is past it
    return np.where(inside, times_to_indices(np.where(inside, times, 0.0), timestamps), -1)


def load_clip(cine: DicomCine | VideoLoop, indices: np.ndarray, mask: str = "box",
              sector_box: Sequence[int] | None = None, preprocess: ClipPreprocess | None = None,
              regions: Sequence[dict] | None = None) -> torch.Tensor:
    """Decode ``indices`` only, blank everything outside the sector, preprocess → ``(3, T, H, W)`` float.

    ``mask``: ``fan`` (``medvid.io.regions.fan_mask``: the fan of each 2-D region, M-mode and spectral
    regions whole, else the moving pixels' fan, else the box), ``box`` (the ingest's sector box),
    ``pixels`` (moving pixels of this clip, else the box) or ``none``. Without ``preprocess`` the clip
    stays at full size on the 0–255 scale.
    """
    frames = cine.frames(indices)  # a fresh array: masked in place
    if mask == "fan":
        keep, _ = fan_mask(frames, regions, sector_box)
        if keep is not None:
            frames[:, ~keep] = 0
        return preprocess.from_frames(frames) if preprocess is not None else to_clip_tensor(frames)
    keep = estimate_sector_mask(frames) if mask == "pixels" else None
    box = clip_box(sector_box, cine.rows, cine.cols) if sector_box is not None and len(sector_box) == 4 else None
    if keep is not None:
        frames[:, ~keep] = 0
    elif mask != "none" and box is not None:
        blank_outside_box(frames, box)
    return preprocess.from_frames(frames) if preprocess is not None else to_clip_tensor(frames)


class EchoVideoDataset(Dataset):
    """One item per cine loop: ``{"video": (3, T, H, W), "video_key", "study_key", "view"}``.

    ``preprocess`` is a ``ClipPreprocess``, a preset name (``PRESETS``) or None (raw 0–255 frames).
    With a preset name, ``n_frames`` / ``target_fps`` / ``frame_stride`` default to the preset's
    sampling (EchoPrime: 16 frames, every 2nd native frame, from the start). ``layouts`` keeps only loops
    of those layouts (``medvid.io.regions.LAYOUTS``, e.g. ``["2d", "color_doppler"]``). ``start="r_wave"``
    samples ``cycles`` whole cardiac cycles (see ``clip_indices``). ``motion="std"`` appends a motion image
    as frame ``n_frames`` (so clips have ``n_frames + 1`` frames). Loops the ingest flagged ``no_sector``
    (nothing locates the image, so burned-in text cannot be blanked) are left out unless ``mask="none"``
    or ``keep_unmasked=True``.
    """

    def __init__(self, ingest_dir: str | os.PathLike, dicom_root: str | os.PathLike, n_frames: int | None = None,
                 target_fps: float | None = None, frame_stride: int | None = None,
                 preprocess: ClipPreprocess | str | None = "echoprime", mask: str = "fan", start: str = "begin",
                 split: str | Sequence[str] | None = None, views: Sequence[str] | None = None,
                 default_fps: float = 30.0, seed: int | None = None, layouts: Sequence[str] | None = None,
                 cycles: int = 1, keep_unmasked: bool = False, short_clip: str = "wrap", motion: str = "none") -> None:
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if short_clip not in SHORT_CLIPS:
            raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, got {short_clip!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
        preset = PRESETS.get(preprocess, {}) if isinstance(preprocess, str) else {}
        self.n_frames = int(n_frames or preset.get("n_frames") or 16)
        if target_fps is None and frame_stride is None:
            target_fps, frame_stride = preset.get("target_fps"), preset.get("frame_stride")
        self.target_fps, self.frame_stride = target_fps, frame_stride
        self.preprocess = resolve_preprocess(preprocess)
        self.mask, self.start, self.default_fps, self.cycles = mask, start, default_fps, int(cycles)
        self.short_clip, self.motion = short_clip, motion
        self.ingest_dir, self.dicom_root = Path(ingest_dir), Path(dicom_root)
        videos = _filter(IngestFolder(self.ingest_dir).read_videos(), split, views, layouts)
        if mask != "none" and not keep_unmasked and "no_sector" in videos:
            videos = videos[~videos["no_sector"].fillna(False).astype(bool)]
        self.videos = videos.reset_index(drop=True)
        self._paths = (dict(zip(self.videos["video_key"], self.videos["path"])) if "path" in self.videos
                       else IngestFolder(self.ingest_dir).video_paths())
        self._rng = np.random.default_rng(seed)

    @classmethod
    def for_model(cls, ingest_dir: str | os.PathLike, dicom_root: str | os.PathLike, model: Any, *,
                  n_frames: int | None = None, target_fps: float | None = None, frame_stride: int | None = None,
                  mask: str | None = None, short_clip: str | None = None, motion: str | None = None,
                  **kwargs: Any) -> "EchoVideoDataset":
        """Loops as ``model`` was trained to see them: sampling, mask, short-loop rule and motion image from its
        ``pretrained_cfg`` (``recorded_sampling``; settings given here win), size/crop/mean/std/channel
        order through ``model.preprocess()``. Other arguments as the constructor."""
        s = recorded_sampling(model.pretrained_cfg, n_frames, target_fps, frame_stride, mask, short_clip, motion)
        return cls(ingest_dir, dicom_root, preprocess=model.preprocess(), **s, **kwargs)

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
        idx = clip_indices(cine, self.n_frames, self.target_fps, self.frame_stride, self.start, self._rng,
                           self.default_fps, self.cycles, wrap=self.short_clip == "wrap")
        box, regions = row.get("sector_box"), row.get("regions")
        clip = load_clip(cine, idx[idx >= 0], self.mask, None if box is None else list(box), self.preprocess,
                         json.loads(regions) if isinstance(regions, str) else None)
        real = clip.shape[1]
        if (idx < 0).any():  # zeros after normalisation past the end of a short loop (positions are at the end)
            clip = torch.cat([clip, clip.new_zeros(clip.shape[0], int((idx < 0).sum()), *clip.shape[2:])], 1)
        return with_motion_image(clip, self.motion, real)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.videos.iloc[i]
        return {"video": self.clip(row), "video_key": row["video_key"], "study_key": row["study_key"],
                "view": str(row.get("view") or "")}


class EchoStudyDataset(Dataset):
    """One item per study: ``{"videos": (V, 3, T, H, W), "video_keys", "views", "study_key", "report",
    "sections", "split"}``. ``max_videos`` caps V (loops taken in view order, then file order);
    ``require_report`` keeps only studies that have one. Arguments as ``EchoVideoDataset``.
    """

    def __init__(self, ingest_dir: str | os.PathLike, dicom_root: str | os.PathLike, max_videos: int | None = None,
                 require_report: bool = False, split: str | Sequence[str] | None = None, **video_kwargs: Any) -> None:
        self.loops = EchoVideoDataset(ingest_dir, dicom_root, split=None, **video_kwargs)
        if self.loops.preprocess is None:
            raise ValueError("EchoStudyDataset stacks loops of different sizes: give a preprocess (size)")
        reports = IngestFolder(ingest_dir).read_reports()
        videos = self.loops.videos
        studies = videos.groupby("study_key", sort=True).indices
        self.reports = dict(zip(reports["study_key"], reports["report"]))
        report_split = dict(zip(reports["study_key"], reports["split"]))
        video_split = dict(zip(videos["study_key"], videos.get("split", pd.Series([""] * len(videos)))))
        wanted = {split} if isinstance(split, str) else set(split) if split else None
        self.studies: list[tuple[str, list[int], str]] = []
        for key, rows in studies.items():
            s = str(report_split.get(key) or video_split.get(key) or "")
            if (wanted is not None and s not in wanted) or (require_report and key not in self.reports):
                continue
            order = sorted(rows, key=lambda r: (str(videos.at[r, "view"] or "~"), r))
            self.studies.append((key, order[:max_videos] if max_videos else order, s))

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> dict[str, Any]:
        key, rows, split = self.studies[i]
        items = [self.loops[r] for r in rows]
        report = str(self.reports.get(key, ""))
        return {"videos": torch.stack([it["video"] for it in items]), "video_keys": [it["video_key"] for it in items],
                "views": [it["view"] for it in items], "study_key": key, "report": report,
                "sections": parse_sections(report), "split": split}


def collate_studies(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch studies with different loop counts: ``videos`` padded to ``(B, Vmax, 3, T, H, W)`` plus
    ``video_mask`` ``(B, Vmax)`` (True where a loop is real); other fields become lists."""
    vmax = max(item["videos"].shape[0] for item in batch)
    shape = batch[0]["videos"].shape[1:]
    videos = torch.zeros((len(batch), vmax, *shape), dtype=batch[0]["videos"].dtype)
    mask = torch.zeros((len(batch), vmax), dtype=torch.bool)
    for b, item in enumerate(batch):
        v = item["videos"].shape[0]
        videos[b, :v] = item["videos"]
        mask[b, :v] = True
    out: dict[str, Any] = {"videos": videos, "video_mask": mask}
    for key in batch[0]:
        if key != "videos":
            out[key] = [item[key] for item in batch]
    return out


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
