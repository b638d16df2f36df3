"""Where the ultrasound image is: the sector box from ``SequenceOfUltrasoundRegions``, else from pixels.

Outside the imaging sector an echo frame carries ECG traces, burned-in text (sometimes PHI) and
colour bars. The DICOM regions sequence says where the image is; when it is absent the sector is
the large connected area whose pixels change over time (ECG sweeps are thin and separate, text and
bars are static). Boxes are ``(x0, y0, x1, y1)``, inclusive-exclusive, in pixel coordinates.

``describe_regions`` keeps each region's bounds, spatial format, data type, physical deltas and units
and reference pixel (the calibration: e.g. cm per pixel of a 2-D image, cm/s and seconds per pixel of
a spectral Doppler strip); ``layout_from_regions`` names the loop's layout from them. ``still_regions`` /
``still_type`` add what calipers on a single-frame still need (reference values, baseline, calibrated). The sector box
covers the 2-D, M-mode and spectral regions: a Doppler or M-mode trace is never blanked. ``fan_mask``
narrows each 2-D region to the fan its moving pixels span (burned-in text in the region's corners is
blanked), keeps M-mode and spectral regions whole, and without regions uses the moving pixels alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

Box = tuple[int, int, int, int]

# DICOM PS3.3 C.8.5.5.1: RegionSpatialFormat, RegionDataType, PhysicalUnits{X,Y}Direction codes.
SPATIAL_FORMATS = {0: "none", 1: "2d", 2: "m_mode", 3: "spectral", 4: "waveform", 5: "graphics"}
DATA_TYPES = {0: "none", 1: "tissue", 2: "color_flow", 3: "pw_doppler", 4: "cw_doppler", 5: "doppler_mean_trace",
              6: "doppler_mode_trace", 7: "doppler_max_trace", 8: "volume_trace", 10: "ecg_trace", 11: "pulse_trace",
              12: "phonocardiogram_trace", 13: "gray_bar", 14: "color_bar", 15: "integrated_backscatter",
              16: "area_trace", 17: "d_area_dt", 18: "other_physiological"}  # 0009H is not assigned
UNITS = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "s", 5: "Hz", 6: "dB/s", 7: "cm/s", 8: "cm2", 9: "cm2/s",
         10: "cm3", 11: "cm3/s", 12: "deg"}
LAYOUTS = ("2d", "color_doppler", "spectral_doppler", "m_mode", "dual_pane", "unknown")
# Regions that carry image content a model must see (never blanked): 2-D, M-mode, spectral Doppler.
_IMAGE_FORMATS = ("2d", "m_mode", "spectral")


def describe_regions(ds: Dataset, rows: int, cols: int) -> list[dict]:
    """Each valid region of ``SequenceOfUltrasoundRegions`` as a plain dict: ``box`` ([x0, y0, x1, y1],
    exclusive ends, clamped to the frame), ``spatial_format``, ``data_type``, ``delta_x`` / ``delta_y``
    (physical size of one pixel), ``units_x`` / ``units_y`` and ``reference_pixel`` ([x0, y0] or None)."""
    return [region for _, region in _regions(ds, rows, cols)]


def _regions(ds: Dataset, rows: int, cols: int) -> list[tuple[Dataset, dict]]:
    """``(item, describe_regions dict)`` of each valid region item."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            box = clip_box((int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                            int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1), rows, cols)
            ref = (item.get("ReferencePixelX0"), item.get("ReferencePixelY0"))
            reference = [int(ref[0]), int(ref[1])] if None not in ref else None
        except (AttributeError, TypeError, ValueError):
            continue
        if box is None:
            continue
        out.append((item, {"box": list(box),
                           "spatial_format": SPATIAL_FORMATS.get(_code(item, "RegionSpatialFormat"), "none"),
                           "data_type": DATA_TYPES.get(_code(item, "RegionDataType"), "none"),
                           "delta_x": as_float(item.get("PhysicalDeltaX")),
                           "delta_y": as_float(item.get("PhysicalDeltaY")),
                           "units_x": UNITS.get(_code(item, "PhysicalUnitsXDirection"), "none"),
                           "units_y": UNITS.get(_code(item, "PhysicalUnitsYDirection"), "none"),
                           "reference_pixel": reference}))
    return out


def still_regions(ds: Dataset, rows: int, cols: int) -> list[dict]:
    """``describe_regions`` with what a caliper on a still needs: ``reference_value`` ([x, y] physical values at
    the reference pixel, ``ReferencePixelPhysicalValueX/Y``), ``baseline_y`` (the frame row where the y quantity is
    0: a spectral strip's zero-velocity baseline, an M-mode strip's skin line; None when uncalibrated) and
    ``calibrated`` (physical units and non-zero deltas on both axes).

    The reference pixel is relative to the region's top-left corner (PS3.3 C.8.5.5.1), so a value at frame pixel
    ``(x, y)`` is ``reference_value + (x - x0 - ref_x) * delta_x`` (likewise for y)."""
    out = []
    for item, region in _regions(ds, rows, cols):
        value = [as_float(item.get("ReferencePixelPhysicalValueX")), as_float(item.get("ReferencePixelPhysicalValueY"))]
        dx, dy, ref = region["delta_x"], region["delta_y"], region["reference_pixel"]
        calibrated = bool(dx and dy) and "none" not in (region["units_x"], region["units_y"])
        baseline = None
        if calibrated and ref is not None:
            baseline = round(region["box"][1] + ref[1] - (value[1] or 0.0) / dy, 2)
        out.append({**region, "reference_value": value if None not in value else None, "baseline_y": baseline,
                    "calibrated": calibrated})
    return out


def still_type(regions: Sequence[dict]) -> str:
    """What a still shows, from its regions: ``spectral_doppler`` (PW/CW Doppler strip), ``m_mode``, else ``2d``
    (a 2-D image, calibrated or not: a screenshot without regions is a ``2d`` still too)."""
    layout = layout_from_regions(regions)
    return layout if layout in ("spectral_doppler", "m_mode") else "2d"


def is_calibrated(regions: Sequence[dict]) -> bool:
    """True when an image region (2-D, M-mode, spectral) of ``still_regions`` is ``calibrated``."""
    return any(r["calibrated"] for r in regions if r["spatial_format"] in _IMAGE_FORMATS)


def layout_from_regions(regions: Sequence[dict]) -> str:
    """``spectral_doppler`` / ``m_mode`` (a trace region, usually under a small 2-D reference image),
    ``dual_pane`` (two 2-D images side by side), ``color_doppler`` (a 2-D region with colour flow), ``2d``,
    or ``unknown`` (no regions)."""
    formats = [r["spatial_format"] for r in regions]
    if "spectral" in formats or any(r["data_type"] in ("pw_doppler", "cw_doppler") for r in regions):
        return "spectral_doppler"
    if "m_mode" in formats:
        return "m_mode"
    images = [r for r in regions if r["spatial_format"] == "2d"]
    if not images:
        return "unknown"
    if len(images) >= 2 and _side_by_side([r["box"] for r in images]):
        return "dual_pane"
    return "color_doppler" if any(r["data_type"] == "color_flow" for r in images) else "2d"


def box_from_regions(ds: Dataset, rows: int, cols: int) -> Box | None:
    """Union of the image regions (2-D, M-mode, spectral Doppler) in ``SequenceOfUltrasoundRegions``
    (else the largest region): traces and the image they belong to stay inside the box."""
    regions = describe_regions(ds, rows, cols)
    if not regions:
        return None
    chosen = [r["box"] for r in regions if r["spatial_format"] in _IMAGE_FORMATS] or \
        [max((r["box"] for r in regions), key=box_area)]
    return (min(b[0] for b in chosen), min(b[1] for b in chosen),
            max(b[2] for b in chosen), max(b[3] for b in chosen))


def _side_by_side(boxes: Sequence[Sequence[int]]) -> bool:
    """True when two of the boxes share no columns (left and right panes)."""
    return any(a[2] <= b[0] or b[2] <= a[0] for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _code(item: Dataset, keyword: str) -> int:
    try:
        return int(item.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0


def as_float(value: object) -> float | None:
    """A DICOM numeric value as float; None when absent or not a number."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def estimate_sector_mask(frames: np.ndarray, threshold: float = 4.0, min_fraction: float = 0.02) -> np.ndarray | None:
    """Boolean ``(H, W)`` mask of the pixels that vary over time, cleaned to the main sector.

    ``frames`` is ``(T, H, W[, 3])`` with T ≥ 2. Returns None when nothing moves (a still image) or
    the moving area is smaller than ``min_fraction`` of the frame.
    """
    if frames.shape[0] < 2:
        return None
    moving = _grey(frames).std(axis=0) > threshold
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


_THIRDS = np.arange(766, dtype=np.float32) / np.float32(3)  # (r + g + b) → the float32 mean of the channels


def _grey(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` float32 grey: the mean of the channels (RGB uint8 through a lookup table on the
    channel sum, bit-identical to ``astype(float32).mean(-1)`` at a fraction of its cost)."""
    if frames.ndim == 4 and frames.dtype == np.uint8 and frames.shape[-1] == 3:
        total = frames[..., 0].astype(np.uint16)
        total += frames[..., 1]
        total += frames[..., 2]
        return _THIRDS[total]
    grey = frames.astype(np.float32)
    return grey.mean(axis=-1) if grey.ndim == 4 else grey


def fan_mask(frames: np.ndarray, regions: Sequence[dict] | None = None,
             fallback_box: Sequence[int] | None = None) -> tuple[np.ndarray | None, str]:
    """Boolean ``(H, W)`` mask of what a model may see in ``(T, H, W[, 3])`` frames, and its source.

    With image regions (``describe_regions``): each 2-D region narrowed to the convex hull of its moving
    pixels (the whole region when nothing moves), M-mode and spectral regions whole → ``"regions"``.
    Without: the convex hull of the frame's moving pixels → ``"pixels"``; else ``fallback_box`` →
    ``"box"``; else ``(None, "none")``: no sector was found, nothing can be blanked.
    """
    rows, cols = frames.shape[1:3]
    image = [r for r in regions or () if r["spatial_format"] in _IMAGE_FORMATS]
    if image:
        mask = np.zeros((rows, cols), dtype=bool)
        for r in image:
            x0, y0, x1, y1 = r["box"]
            moving = estimate_sector_mask(frames[:, y0:y1, x0:x1]) if r["spatial_format"] == "2d" else None
            mask[y0:y1, x0:x1] |= convex_hull_mask(moving) if moving is not None else True
        return mask, "regions"
    moving = estimate_sector_mask(frames)
    if moving is not None:
        return convex_hull_mask(moving), "pixels"
    box = clip_box(fallback_box, rows, cols) if fallback_box is not None and len(fallback_box) == 4 else None
    return (box_mask(box, rows, cols), "box") if box is not None else (None, "none")


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a boolean mask, filled (a fan stays a fan; text notches and gaps close)."""
    from PIL import Image, ImageDraw

    edge = mask & ~ndimage.binary_erosion(mask)
    points = np.argwhere(edge)[:, ::-1]  # (x, y)
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # fewer than 3 points, or all on a line
        return mask.copy()
    canvas = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(map(int, p)) for p in hull], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool) | mask


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


def box_area(box: Sequence[int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_mask(box: Box, rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def apply_mask(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero everything outside ``mask`` in ``(T, H, W, 3)`` frames (returns a new array)."""
    return frames * mask[None, :, :, None].astype(frames.dtype)


def blank_outside_mask(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero everything outside the ``(H, W)`` boolean ``mask`` in ``(T, H, W[, C])`` frames, in place.

    A fan is one run of kept pixels per row, so the blanked pixels are written as a few slices per row
    (several times faster than boolean indexing of the whole clip); a ragged mask falls back to that."""
    flips = np.diff(np.pad(~mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    ys, starts = np.nonzero(flips == 1)
    _, ends = np.nonzero(flips == -1)
    if len(ys) > 4 * mask.shape[0]:
        frames[:, ~mask] = 0
        return frames
    for y, x0, x1 in zip(ys.tolist(), starts.tolist(), ends.tolist()):
        frames[:, y, x0:x1] = 0
    return frames


def blank_outside_box(frames: np.ndarray, box: Box) -> np.ndarray:
    """Zero everything outside ``box`` in ``(T, H, W[, C])`` frames, in place (four slice writes)."""
    x0, y0, x1, y1 = box
    frames[:, :y0] = 0
    frames[:, y1:] = 0
    frames[:, :, :x0] = 0
    frames[:, :, x1:] = 0
    return frames
