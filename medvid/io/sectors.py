"""Each loop's fan (sector) mask, estimated once and kept beside the ingest: ``DIR/sectors.jsonl``.

Estimating a fan (``medvid.io.regions.fan_mask``) costs more than decoding the clip, and a loop's sector
does not change between reads, so readers estimate it once and store it here for every later epoch, job
and process. One JSON line per loop: ``{"v", "video_key", "rows", "cols", "source", "mask"}`` where
``mask`` is the boolean mask bit-packed, zlib-compressed and base64-encoded (a 480×640 fan takes about
1 KB; lossless) or null when no sector was found. Geometry and pseudonymous keys only: no PHI.

Lines are appended under an exclusive lock, one ``write`` each, so DataLoader workers and concurrent
jobs can share the file; a line cut by a kill, or one that does not fit the loop (another size, another
format version ``v``), is ignored and the sector estimated again. A folder that cannot be written keeps
the sectors in memory only (logged once).
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger("medvid")

SECTORS = "sectors.jsonl"
VERSION = 1  # bump when the estimate (or the frames it uses) changes: older lines are then ignored
MAX_LINE = 1 << 20  # a longer line was not written by us (a 4096² mask packs to 2 MB before zlib, ~10 KB after)


def pack_mask(mask: np.ndarray) -> str:
    """A boolean ``(H, W)`` mask as compact text (bit-packed, zlib, base64); ``unpack_mask`` reverses it."""
    return base64.b64encode(zlib.compress(np.packbits(mask, axis=None).tobytes(), 6)).decode("ascii")


def unpack_mask(text: str, rows: int, cols: int) -> np.ndarray:
    """The ``(rows, cols)`` mask ``pack_mask`` wrote; ``ValueError`` when the text is not one (decompression
    is bounded by the size the mask must have)."""
    need = (rows * cols + 7) // 8
    inflater = zlib.decompressobj()
    raw = inflater.decompress(base64.b64decode(text, validate=True), need)
    if len(raw) != need or inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("not a packed mask of this size")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=rows * cols).reshape(rows, cols).astype(bool)


class SectorStore:
    """The sectors of an ingest folder ``root``: ``get`` what was stored, ``put`` what was estimated.

    Lines are read lazily and again (from where the last read stopped) on a miss, so a loop estimated by
    another process since is found, not estimated twice.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root) / SECTORS
        self._lines: dict[str, dict] = {}
        self._offset = 0
        self._writable = True

    def get(self, video_key: str, rows: int, cols: int) -> tuple[np.ndarray | None, str] | None:
        """``(mask or None, source)`` stored for ``video_key`` at this size, else None (not stored yet)."""
        line = self._lines.get(video_key)
        if line is None:
            self._read_new()
            line = self._lines.get(video_key)
        if line is None or line.get("rows") != rows or line.get("cols") != cols:
            return None
        try:
            mask = None if line["mask"] is None else unpack_mask(line["mask"], rows, cols)
        except (ValueError, TypeError, zlib.error):
            return None
        return mask, str(line.get("source", ""))

    def put(self, video_key: str, mask: np.ndarray | None, source: str, rows: int, cols: int) -> None:
        """Keep ``mask`` (``(rows, cols)`` bool, or None: no sector) for ``video_key``: in memory, and appended
        to the file unless it cannot be written."""
        line = {"v": VERSION, "video_key": video_key, "rows": rows, "cols": cols, "source": source,
                "mask": None if mask is None else pack_mask(mask)}
        self._lines[video_key] = line
        if not self._writable:
            return
        data = (json.dumps(line) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            self._writable = False
            log.warning("sectors: cannot write %s (%s); fan masks are kept in memory only", self.path,
                        type(exc).__name__)

    def _read_new(self) -> None:
        """Read the complete lines appended since the last read; a line longer than ``MAX_LINE`` is skipped
        unread (hostile input stays bounded)."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        with f:
            f.seek(self._offset)
            while raw := f.readline(MAX_LINE + 1):
                if not raw.endswith(b"\n"):
                    if len(raw) <= MAX_LINE:
                        return  # a line still being written (or cut by a kill): read it next time
                    while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    self._offset = f.tell()
                    continue
                self._offset = f.tell()
                self._keep(raw)

    def _keep(self, raw: bytes) -> None:
        try:
            line = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if isinstance(line, dict) and line.get("v") == VERSION and isinstance(line.get("video_key"), str):
            self._lines[line["video_key"]] = line
