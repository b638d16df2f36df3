"""Frames → model-ready clips: uint8 ``(T, H, W, 3)`` → float ``(3, T, size, size)``.

Built from MONAI transforms, which treat a ``(C, T, H, W)`` clip as a 3-D image with T as the
first spatial axis: one crop/resize applied to the whole clip is temporally consistent.
Intensities stay on the 0–255 scale until normalisation, so presets quote mean/std on that scale
(as EchoPrime does).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import CenterSpatialCrop, EnsureType, Resize

CROPS = ("center_square", "none")

# Input conventions of published models. ``num_frames``/``frame_stride`` (native frames) or
# ``fps`` describe the sampling (``medvid.transforms.contract.Sampling.of_preset``); the other keys are
# ``ClipPreprocess`` arguments.
PRESETS: dict[str, dict[str, Any]] = {
    # EchoPrime: 16 frames every 2nd native frame from the start, centre square with 10 % zoom, 224².
    "echoprime": {
        "num_frames": 16, "frame_stride": 2, "fps": None,
        "size": 224, "crop": "center_square", "zoom": 0.1,
        "mean": (29.110628, 28.076836, 29.096405), "std": (47.989223, 46.456997, 47.20083),
    },
    # timm's IMAGENET_DEFAULT_MEAN / _STD (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) × 255.
    "imagenet": {
        "num_frames": 16, "frame_stride": None, "fps": 15.0,
        "size": 224, "crop": "center_square", "zoom": 0.0,
        "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375),
    },
    # timm's IMAGENET_INCEPTION_MEAN / _STD (0.5 / 0.5) × 255: what tf_efficientnet_lite0 was trained with.
    "imagenet_inception": {
        "num_frames": 16, "frame_stride": None, "fps": 15.0,
        "size": 224, "crop": "center_square", "zoom": 0.0,
        "mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5),
    },
}

_PREPROCESS_KEYS = ("size", "crop", "zoom", "mean", "std")


def to_clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB frames ``(T, H, W, 3)`` → float32 ``(3, T, H, W)`` on the 0–255 scale."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()


class ClipPreprocess:
    """Crop, resize and normalise a ``(C, T, H, W)`` clip (0–255 scale) to ``(C, T, size, size)``.

    ``crop="center_square"`` takes the largest centred square; ``zoom`` then removes that fraction
    of the side on each edge (EchoPrime's 10 % zoom keeps the central 80 %). ``crop="none"``
    resizes the whole frame (aspect ratio not kept).
    """

    def __init__(self, size: int = 224, crop: str = "center_square", zoom: float = 0.0,
                 mean: Sequence[float] = PRESETS["imagenet"]["mean"],
                 std: Sequence[float] = PRESETS["imagenet"]["std"]) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if not 0.0 <= zoom < 0.5:
            raise ValueError(f"zoom must be in [0, 0.5), got {zoom}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        self.size, self.crop, self.zoom = int(size), crop, float(zoom)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        # Area averaging when shrinking (no aliasing), linear when enlarging; T is never resampled.
        self._shrink = Resize(spatial_size=(-1, self.size, self.size), mode="area")
        self._enlarge = Resize(spatial_size=(-1, self.size, self.size), mode="trilinear", align_corners=False)
        # Per-channel (x - mean) / std as one broadcast op on a plain tensor: MONAI's NormalizeIntensity
        # gives the same numbers but loops over channels through MetaTensor dispatch, ~10x slower on clips.
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1, 1)
        self._plain = EnsureType(data_type="tensor", track_meta=False)
        levels = np.arange(256, dtype=np.float32)
        self._lut = np.stack([(levels - m) / sd for m, sd in zip(self.mean, self.std)]).astype(np.float32)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ClipPreprocess":
        """The preprocessing of a named preset (see ``PRESETS``), with optional overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        kwargs = {k: PRESETS[name][k] for k in _PREPROCESS_KEYS}
        kwargs.update(overrides)
        return cls(**kwargs)

    def crop_box(self, height: int, width: int) -> tuple[int, int]:
        """Side lengths ``(h, w)`` of the centred region kept before resizing."""
        h, w = (min(height, width),) * 2 if self.crop == "center_square" else (height, width)
        return max(1, round(h * (1 - 2 * self.zoom))), max(1, round(w * (1 - 2 * self.zoom)))

    def geometry(self, height: int, width: int) -> dict[str, tuple]:
        """Where a ``height × width`` frame's output comes from: ``crop_box`` ``(x0, y0, x1, y1)`` in source
        pixels and ``scale`` ``(sx, sy)``, output pixels per source pixel. ``n`` output pixels along x are
        ``n / sx`` source pixels, i.e. ``n / sx * delta_x`` cm with the region's ``PhysicalDeltaX`` in cm."""
        h, w = self.crop_box(height, width)
        y0, x0 = height // 2 - h // 2, width // 2 - w // 2  # as monai CenterSpatialCrop
        return {"crop_box": (x0, y0, x0 + w, y0 + h), "scale": (self.size / w, self.size / h)}

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) clip, got {tuple(clip.shape)}")
        h, w = self.crop_box(clip.shape[-2], clip.shape[-1])
        if (h, w) != tuple(clip.shape[-2:]):
            clip = CenterSpatialCrop(roi_size=(-1, h, w))(clip)
        resize = self._shrink if min(h, w) >= self.size else self._enlarge
        return (self._plain(resize(clip.float())) - self._mean) / self._std

    def from_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Same result as ``self(to_clip_tensor(frames))`` for uint8 ``(T, H, W, 3)`` frames, made for speed
        on the decode path: Pillow crops and resizes each frame in uint8 (box = area averaging when
        shrinking, bilinear when enlarging; MONAI's centre convention), then a per-channel lookup table
        maps 0–255 straight to normalised floats in ``(3, T, size, size)`` layout.
        """
        from PIL import Image

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        t, height, width, _ = frames.shape
        x0, y0, x1, y1 = self.geometry(height, width)["crop_box"]
        h, w = y1 - y0, x1 - x0
        resample = Image.Resampling.BOX if min(h, w) >= self.size else Image.Resampling.BILINEAR
        small = np.empty((t, self.size, self.size, 3), dtype=np.uint8)
        for i in range(t):
            small[i] = np.asarray(Image.fromarray(np.ascontiguousarray(frames[i])).resize(
                (self.size, self.size), resample, box=(x0, y0, x0 + w, y0 + h)))
        out = np.empty((3, t, self.size, self.size), dtype=np.float32)
        for c in range(3):
            np.take(self._lut[c], small[..., c], out=out[c])
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return (f"ClipPreprocess(size={self.size}, crop={self.crop!r}, zoom={self.zoom}, "
                f"mean={self.mean}, std={self.std})")


def resolve_preprocess(preprocess: "ClipPreprocess | str | None") -> "ClipPreprocess | None":
    """Accept a ``ClipPreprocess``, a preset name, or None (no preprocessing)."""
    if preprocess is None or isinstance(preprocess, ClipPreprocess):
        return preprocess
    if isinstance(preprocess, str):
        return ClipPreprocess.from_preset(preprocess)
    raise TypeError(f"preprocess must be a ClipPreprocess, a preset name or None, got {type(preprocess).__name__}")


MOTIONS = ("none", "std")  # a motion image appended to a clip: none, or each pixel's standard deviation over time


def motion_frames(motion: str) -> int:
    """Frames a ``motion`` setting appends to every clip: 0 (``"none"``) or 1."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    return int(motion != "none")


def with_motion_image(clip: torch.Tensor, motion: str, n_real: int | None = None) -> torch.Tensor:
    """``(C, T, H, W)`` → ``(C, T + 1, H, W)``: the clip with a motion image as its last frame (``motion="std"``:
    each pixel's standard deviation over the first ``n_real`` frames, default all), or unchanged (``"none"``).

    Why: a frozen image backbone sees each frame alone, so it reads chamber size well but the amplitude of
    wall motion (ejection fraction) poorly; one still image of where and how far the walls move puts that
    amplitude in front of it (the idea of TSN's RGB-difference input). Computed after normalisation.
    """
    if not motion_frames(motion):
        return clip
    real = clip[:, :n_real] if n_real is not None else clip
    return torch.cat([clip, real.std(dim=1, correction=0, keepdim=True)], dim=1)
