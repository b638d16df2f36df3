"""Temporally consistent clip augmentation (CVRL style): one random crop, flip and colour jitter per clip.

Parameters are drawn once per clip and applied to every frame, so motion is not destroyed by
frame-to-frame jitter. Clips are ``(C, T, H, W)`` float tensors on the 0-255 scale (before
normalisation); MONAI's ``SpatialCrop``/``Flip`` treat T as the first spatial axis. Randomness
comes from a ``numpy.random.Generator`` passed per call, so a dataset seeded per item is
reproducible regardless of worker order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Flip, SpatialCrop

# ITU-R BT.601 luma weights, for saturation jitter.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)


@dataclass
class ClipAugment:
    """Random resized-crop area fraction, aspect-ratio range, horizontal flip, and colour jitter.

    ``scale``: area fraction of the crop; ``ratio``: width/height range; ``brightness``,
    ``contrast``, ``saturation``: maximum relative change (0 disables). Output keeps the input
    size only if a ``ClipPreprocess`` resizes afterwards (the crop is smaller).
    """

    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3

    def params(self, height: int, width: int, rng: np.random.Generator) -> dict:
        """The random choices for one clip (also useful to log or replay)."""
        area = height * width * rng.uniform(*self.scale)
        aspect = float(np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]))))
        w = int(round(min(width, np.sqrt(area * aspect))))
        h = int(round(min(height, np.sqrt(area / aspect))))
        y0 = int(rng.integers(0, height - h + 1))
        x0 = int(rng.integers(0, width - w + 1))
        jitter = lambda m: float(rng.uniform(1 - m, 1 + m)) if m > 0 else 1.0  # noqa: E731
        return {"box": (y0, x0, h, w), "flip": bool(rng.random() < self.flip_p),
                "brightness": jitter(self.brightness), "contrast": jitter(self.contrast),
                "saturation": jitter(self.saturation)}

    def apply(self, clip: torch.Tensor, p: dict) -> torch.Tensor:
        """Apply the choices ``p`` to a ``(C, T, H, W)`` clip."""
        y0, x0, h, w = p["box"]
        t = clip.shape[1]
        out = SpatialCrop(roi_start=(0, y0, x0), roi_end=(t, y0 + h, x0 + w))(clip)
        if p["flip"]:
            out = Flip(spatial_axis=2)(out)
        out = torch.as_tensor(out).float()
        out = out * p["brightness"]
        mean = out.mean(dim=(0, 2, 3), keepdim=True)  # per frame, so a dark frame stays dark
        out = (out - mean) * p["contrast"] + mean
        gray = (out * _LUMA).sum(0, keepdim=True)
        out = (out - gray) * p["saturation"] + gray
        return out.clamp(0, 255)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) clip, got {tuple(clip.shape)}")
        rng = rng if rng is not None else np.random.default_rng()
        return self.apply(clip, self.params(clip.shape[2], clip.shape[3], rng))
