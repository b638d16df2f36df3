"""Where the ultrasound image is: the sector box from ``SequenceOfUltrasoundRegions``, else from pixels.

Outside the imaging sector an echo frame carries ECG traces, burned-in text (sometimes PHI) and
colour bars. The DICOM regions sequence says where the image is; when it is absent the sector is
the large connected area whose pixels change over time (ECG sweeps are thin and separate, text and
bars are static). Boxes are ``(x0, y0, x1, y1)``, inclusive-exclusive, in pixel coordinates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

Box = tuple[int, int, int, int]

# RegionSpatialFormat 1 = 2-D tissue/flow image; RegionDataType 1 = tissue, 2 = colour flow.
_SPATIAL_2D = 1


def box_from_regions(ds: Dataset, rows: int, cols: int) -> Box | None:
    """Union of the 2-D image regions in ``SequenceOfUltrasoundRegions`` (else the largest region)."""
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    boxes, spatial = [], []
    for item in regions:
        try:
            box = (int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                   int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue
        box = clip_box(box, rows, cols)
        if box is None:
            continue
        boxes.append(box)
        spatial.append(int(item.get("RegionSpatialFormat", 0) or 0) == _SPATIAL_2D)
    if not boxes:
        return None
    chosen = [b for b, s in zip(boxes, spatial) if s] or [max(boxes, key=box_area)]
    return (min(b[0] for b in chosen), min(b[1] for b in chosen),
            max(b[2] for b in chosen), max(b[3] for b in chosen))


def estimate_sector_mask(frames: np.ndarray, threshold: float = 4.0, min_fraction: float = 0.02) -> np.ndarray | None:
    """Boolean ``(H, W)`` mask of the pixels that vary over time, cleaned to the main sector.

    ``frames`` is ``(T, H, W[, 3])`` with T ≥ 2. Returns None when nothing moves (a still image) or
    the moving area is smaller than ``min_fraction`` of the frame.
    """
    if frames.shape[0] < 2:
        return None
    grey = frames.astype(np.float32)
    if grey.ndim == 4:
        grey = grey.mean(axis=-1)
    moving = grey.std(axis=0) > threshold
    moving = ndimage.binary_opening(moving, structure=np.ones((3, 3)), iterations=1)
    labels, n = ndimage.label(moving)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(moving, labels, index=np.arange(1, n + 1))
    main = labels == (int(np.argmax(sizes)) + 1)
    if main.sum() < min_fraction * main.size:
        return None
    # Dark, still tissue inside the fan is still sector: close gaps and fill holes.
    main = ndimage.binary_closing(main, structure=np.ones((5, 5)), iterations=2)
    return ndimage.binary_fill_holes(main)


def box_from_mask(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def clip_box(box: Sequence[int], rows: int, cols: int) -> Box | None:
    """Clamp a box to the frame; None if empty."""
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, cols)), max(0, min(x1, cols))
    y0, y1 = max(0, min(y0, rows)), max(0, min(y1, rows))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def box_area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_mask(box: Box, rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def apply_mask(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero everything outside ``mask`` in ``(T, H, W, 3)`` frames (returns a new array)."""
    return frames * mask[None, :, :, None].astype(frames.dtype)


def blank_outside_box(frames: np.ndarray, box: Box) -> np.ndarray:
    """Zero everything outside ``box`` in ``(T, H, W[, C])`` frames, in place (four slice writes)."""
    x0, y0, x1, y1 = box
    frames[:, :y0] = 0
    frames[:, y1:] = 0
    frames[:, :, :x0] = 0
    frames[:, :, x1:] = 0
    return frames
