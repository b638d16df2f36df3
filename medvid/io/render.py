"""Cine loops and stills for display: DICOM frames → sector-masked, cropped, downscaled → small H.264 MP4 (loops)
or PNG (stills: a Doppler / M-mode strip or 2-D image, with the crop box to place calipers on it).

Everything outside the imaging sector (ECG trace, burned-in text that may name the patient,
colour bars) is blanked and cropped away before a frame is encoded. The sector is the one the
datasets use (``medvid.io.regions.fan_mask``: the file's ultrasound regions narrowed to their moving
fan, else the moving pixels, else the ingest's box); a loop whose sector cannot be found is refused
rather than shown unmasked. Output is H.264 (libx264),
``yuv420p``, even width and height, at the loop's native frame rate, playable in every browser.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from medvid.errors import MedvidError
from medvid.io.dicom import DicomCine, quiet_pydicom
from medvid.io.regions import box_from_mask, describe_regions, fan_mask
from medvid.io.video import write_video

DEFAULT_FPS = 30.0


class RenderError(MedvidError):
    """A loop that cannot be rendered safely (no sector found, nothing to decode)."""


def masked_frames(cine: DicomCine, sector_box: Sequence[int] | None = None, max_frames: int = 1000) -> np.ndarray:
    """All frames (at most ``max_frames``), everything outside the sector blanked, cropped to the sector.

    The sector is ``medvid.io.regions.fan_mask`` of the file's ultrasound regions (each 2-D region
    narrowed to its moving fan, M-mode and spectral regions whole), else of the moving pixels, else
    ``sector_box`` (the ingest's ``(x0, y0, x1, y1)``). Raises ``RenderError`` when none is found.
    """
    return masked_crop(cine, sector_box, max_frames)[0]


def masked_crop(cine: DicomCine, sector_box: Sequence[int] | None = None,
                max_frames: int = 1000) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``masked_frames`` and the crop box ``(x0, y0, x1, y1)`` in source pixels (to map calipers onto it)."""
    n = min(cine.n_frames, max_frames)
    if n < 1:
        raise RenderError("no frames")
    frames = cine.frames(np.arange(n))
    with quiet_pydicom():
        regions = describe_regions(cine.ds, cine.rows, cine.cols)
    keep, _ = fan_mask(frames, regions, sector_box)
    box = box_from_mask(keep) if keep is not None else None
    if box is None:
        raise RenderError("no imaging sector found (no ultrasound regions, no moving pixels): not shown unmasked")
    frames[:, ~keep] = 0
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(frames[:, y0:y1, x0:x1]), box


def even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale ``(width, height)`` down to fit ``max_side`` (never up), both rounded down to even numbers ≥ 2."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale / 2) * 2), max(2, int(height * scale / 2) * 2)


def encode_mp4(frames: np.ndarray, fps: float, out: str | os.PathLike, max_side: int = 320, crf: int = 26) -> Path:
    """``uint8 (T, H, W, 3)`` RGB frames → H.264 MP4 file at ``out``, scaled to fit ``max_side`` (even size)."""
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise RenderError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    write_video(out, frames, fps if fps and fps > 0 else DEFAULT_FPS, crf=crf,
                size=even_size(frames.shape[2], frames.shape[1], max_side))
    return Path(out)


def render_loop(cine: DicomCine, out: str | os.PathLike, sector_box: Sequence[int] | None = None,
                max_side: int = 320, crf: int = 26) -> Path:
    """Write a cine loop as a masked H.264 MP4 at its native frame rate to ``out`` (atomic)."""
    return encode_mp4(masked_frames(cine, sector_box), cine.fps or DEFAULT_FPS, out, max_side, crf)


def render_loop_bytes(cine: DicomCine, sector_box: Sequence[int] | None = None, max_side: int = 320,
                      crf: int = 26) -> bytes:
    """``render_loop`` into memory (the encoder writes a temporary file: MP4 puts its index first)."""
    with tempfile.TemporaryDirectory(prefix="medvid-render-") as tmp:
        return render_loop(cine, Path(tmp) / "loop.mp4", sector_box, max_side, crf).read_bytes()


def render_cached(dicom_path: str | os.PathLike, out: str | os.PathLike, sector_box: Sequence[int] | None = None,
                  max_side: int = 320, crf: int = 26) -> Path:
    """``render_loop`` of ``dicom_path`` to ``out``, reusing an ``out`` that is newer than the DICOM file."""
    src, out = Path(dicom_path), Path(out)
    if out.exists() and out.stat().st_size > 0 and out.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return out
    return render_loop(DicomCine(src), out, sector_box, max_side, crf)


def render_still_png(cine: DicomCine, sector_box: Sequence[int] | None = None,
                     max_side: int = 800) -> tuple[bytes, dict]:
    """A still's first frame as PNG bytes, masked and cropped like a loop (its regions, else ``sector_box``; a
    still has no moving pixels, so without either it is refused), scaled to fit ``max_side`` (never up), and its
    geometry ``{"crop_box": (x0, y0, x1, y1), "scale": (sx, sy)}`` (PNG pixels per source pixel): a caliper at
    source pixel ``(x, y)`` is at ``((x - x0) * sx, (y - y0) * sy)`` in the PNG."""
    from PIL import Image

    frames, box = masked_crop(cine, sector_box, max_frames=1)
    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(frames[0])
    if size != (width, height):
        image = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), {"crop_box": box, "scale": (size[0] / width, size[1] / height)}
