"""``VideoReader``: the one frame-access surface of every decoder medvid reads loops and videos with.

``medvid.io.video.Video`` (video files) and ``medvid.io.dicom.DicomCine`` (DICOM cine loops) both
implement it, so a data set, a sampler or a benchmark reads either without knowing which it holds
(``medvid.io.echo_videos.open_loop`` picks by file name). A reader decodes only the frames asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class VideoReader(Protocol):
    """``frames(indices)`` → a fresh, writable uint8 ``(T, H, W, 3)`` RGB array (any order, repeats allowed;
    None = every frame); ``n_frames`` in the file; ``fps`` (None when the file states no rate) and
    ``timestamps`` (start time of each frame in seconds; None when unknown); ``rows`` × ``cols`` per frame;
    ``close()`` (also as a context manager) releases the file."""

    path: Path

    @property
    def n_frames(self) -> int: ...

    @property
    def fps(self) -> Optional[float]: ...

    @property
    def timestamps(self) -> Optional[np.ndarray]: ...

    @property
    def rows(self) -> int: ...

    @property
    def cols(self) -> int: ...

    def frames(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> "VideoReader": ...

    def __exit__(self, *exc: object) -> None: ...
