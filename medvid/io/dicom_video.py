"""MPEG-2 / H.264 / HEVC cines inside DICOM: the encapsulated fragments form one video stream, decoded with PyAV.

DICOM stores a video transfer syntax (PS3.5 8.2.5-8.2.8) as encapsulated Pixel Data whose fragments, joined,
are one elementary stream (or container); frames are not separately addressable, so a frame is reached by
decoding the stream from its start. Reading is bounded: the stream is refused past ``max_bytes`` and only the
frames asked for are converted to RGB.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.uid import MPEGTransferSyntaxes, UID

VIDEO_SYNTAXES: frozenset[UID] = frozenset(UID(u) for u in MPEGTransferSyntaxes)


class StreamTooLarge(ValueError):
    """The joined fragments exceed the byte bound."""


def read_stream(path: Path, offset: int, max_bytes: int) -> bytes:
    """The encapsulated fragments of the Pixel Data value at ``offset`` joined into one stream (at most
    ``max_bytes``, else ``StreamTooLarge``)."""
    out = io.BytesIO()
    with open(path, "rb") as f:
        f.seek(offset)
        parse_basic_offsets(f)
        for fragment in generate_fragments(f):
            if out.tell() + len(fragment) > max_bytes:
                raise StreamTooLarge(f"video stream longer than {max_bytes} bytes")
            out.write(fragment)
    return out.getvalue()


def decode_frames(stream: bytes, indices: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Frames ``indices`` (sorted, unique) of ``stream`` as ``uint8 (T, H, W, 3)`` RGB; ``shape`` is the header's
    ``(rows, columns)``. Raises ``EOFError`` when the stream holds fewer frames (a cut file), ``ValueError`` when a
    frame is not the header's size."""
    import av  # FFmpeg loads only when a video cine is decoded

    wanted = {int(i): k for k, i in enumerate(indices)}
    out = np.empty((len(indices), *shape, 3), dtype=np.uint8)
    last, seen = max(wanted), 0
    with av.open(io.BytesIO(stream), mode="r") as container:
        for seen, frame in enumerate(container.decode(video=0), start=1):
            i = seen - 1
            if i in wanted:
                if (frame.height, frame.width) != shape:
                    raise ValueError(f"frame {i} decodes to {frame.height}×{frame.width}, header says "
                                     f"{shape[0]}×{shape[1]}")
                out[wanted[i]] = frame.to_ndarray(format="rgb24")
            if i >= last:
                return out
    raise EOFError(f"end of file: the video stream holds {seen} frame(s)")
