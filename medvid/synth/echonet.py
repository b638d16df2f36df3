"""The synthetic echo world written in the EchoNet-Dynamic layout (``medvid synth echo layout=echonet``).

Each video is one apical-4-chamber loop of a fake patient (``sample_findings``, ``render_loop``), cropped
to the imaging sector and resized to 112×112 as EchoNet-Dynamic's videos are, written as an AVI
(Motion JPEG through FFmpeg/PyAV) under ``Videos/``. ``FileList.csv`` carries the EF truth, volumes,
size, rate, frame count and split; ``VolumeTracings.csv`` traces the left ventricle (long axis then 20
disk chords) at one end-diastolic and one end-systolic frame of the loop, from the rendered geometry.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from medvid.synth.echo import _DILATION, VIEW_GEOMETRY, _splits, render_loop, sample_findings
from medvid.utils import atomic_path

SIZE = 112
N_DISKS = 20
FILELIST_HEADER = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
TRACING_HEADER = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: float, quality: int = 3) -> None:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as a Motion-JPEG AVI through FFmpeg (atomically).
    ``quality`` is FFmpeg's ``q:v`` (2 best … 31 worst)."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=int(round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuvj420p"
        stream.options = {"q:v": str(quality)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def _crop_resize(frames: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR,
                                                          box=(x0, y0, x1, y1))) for f in frames])


def lv_tracing(geometry: dict, scale: float, dilated: bool, size: int = SIZE) -> np.ndarray:
    """The LV of a rendered A4C loop at chamber ``scale`` as EchoNet traces it: ``[1 + N_DISKS, 4]`` lines
    (long axis, then disk chords) in the coordinates of the cropped ``size``×``size`` video."""
    cx, cy, a, b, _ = VIEW_GEOMETRY["A4C"]["chambers"]["LV"]
    if dilated:
        scale, cy = scale * _DILATION["LV"], cy + 0.04
    apex_x, apex_y, radius, half = geometry["fan"]
    jx, jy = geometry["jitter"]
    x0, y0, x1, y1 = geometry["sector_box"]
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    px = lambda u: (apex_x + (u + jx) * half - x0) * sx  # noqa: E731 - fan → video coordinates
    py = lambda v: (apex_y + (v + jy) * radius - y0) * sy  # noqa: E731
    ra, rb = a * scale, b * scale
    lines = [(px(cx), py(cy - rb), px(cx), py(cy + rb))]
    for v in np.linspace(-rb, rb, N_DISKS + 2)[1:-1]:
        w = ra * np.sqrt(max(0.0, 1 - (v / rb) ** 2))
        lines.append((px(cx - w), py(cy + v), px(cx + w), py(cy + v)))
    return np.round(np.asarray(lines, dtype=np.float64), 2)


def synthesize_echonet(out: str | os.PathLike, videos: int = 24, seed: int = 0, frames_range: Sequence[int] = (64, 128),
                       fps_choices: Sequence[float] = (50.0,), split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
                       render_rows: int = 128, render_cols: int = 160, quality: int = 3, filename_ext: bool = False,
                       progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``videos`` synthetic A4C loops in the EchoNet-Dynamic layout under ``out``; returns a summary.

    ``filename_ext``: FileList's ``FileName`` with ``.avi`` (both spellings exist in the wild).
    Deterministic for a given ``seed``.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    split_of = _splits(videos, rng, split_fractions)
    filelist, tracings = [], []
    for i in range(videos):
        findings = sample_findings(rng)
        name = "0X" + "".join(f"{int(x):X}" for x in rng.integers(0, 16, size=16))
        fps = float(rng.choice(list(fps_choices)))
        n = int(rng.integers(frames_range[0], frames_range[1] + 1))
        frames, geo = render_loop("A4C", findings, n, fps, render_rows, render_cols, rng,
                                  heart_rate=float(rng.uniform(55, 105)))
        write_avi(out / "Videos" / f"{name}.avi", _crop_resize(frames, geo["sector_box"], SIZE), fps, quality)
        es_ratio = (1.0 - findings.ef / 100.0) ** (1 / 3)  # render_loop's LV linear size at end-systole
        ed, es = int(np.argmin(geo["contraction"])), int(np.argmax(geo["contraction"]))
        for frame, scale in ((es, 1.0 - (1.0 - es_ratio) * float(geo["contraction"][es])),
                             (ed, 1.0 - (1.0 - es_ratio) * float(geo["contraction"][ed]))):
            tracings += [[f"{name}.avi", *line, frame] for line in lv_tracing(geo, scale, findings.lv_dilation)]
        edv = float(rng.uniform(80, 140)) * (_DILATION["LV"] ** 3 if findings.lv_dilation else 1.0)
        filelist.append([f"{name}.avi" if filename_ext else name, round(findings.ef, 2),
                         round(edv * (1 - findings.ef / 100), 2), round(edv, 2), SIZE, SIZE, int(round(fps)), n,
                         split_of[i].upper()])
        if progress:
            progress(1)
    _write_csv(out / "FileList.csv", FILELIST_HEADER, filelist)
    _write_csv(out / "VolumeTracings.csv", TRACING_HEADER, tracings)
    return {"out": str(out), "layout": "echonet", "videos": videos,
            "frames": int(sum(r[7] for r in filelist)), "splits": {s: split_of.count(s) for s in sorted(set(split_of))}}


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
