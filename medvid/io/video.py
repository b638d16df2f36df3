"""One video interface over decord (fast random access) with PyAV as the fallback decoder.

``Video(path)`` opens a file lazily: only the frames asked for are decoded, and
``iter_batches`` streams a whole video at a target rate (e.g. 1 fps) without holding it in
memory. Times are seconds; the time -> frame mapping is ``medvid.io.timing``'s.
Frames come back as ``numpy.uint8`` arrays ``(T, H, W, 3)``, RGB. ``Video`` is a
``medvid.io.reader.VideoReader`` (``frames(indices)``, ``n_frames``, ``fps``, ``timestamps``, ``rows``,
``cols``, ``close``), like ``medvid.io.dicom.DicomCine``.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from medvid.errors import MedvidError
from medvid.io.timing import frame_timestamps, regular_times, span_times, times_to_indices
from medvid.utils import atomic_path

log = logging.getLogger("medvid")

BACKENDS = ("auto", "decord", "pyav")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
# PyAV seeks (to the keyframe before the target) rather than decoding forward when the next
# wanted frame is further ahead than this many frames.
_PYAV_SEEK_AHEAD = 300


class Video:
    """A video file opened for time-based frame access.

    ``backend="auto"``: random access (``frames_at``, ``clip``) uses decord, opened on first
    use, falling back to PyAV for files decord cannot open; in-order streaming
    (``iter_batches``) and metadata use PyAV (decord if PyAV cannot open the file).
    ``"decord"`` or ``"pyav"`` force one decoder for everything. Raises ``MedvidError``
    (path + reason) for missing, unreadable or empty videos.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", num_threads: int = 0):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise MedvidError(f"{self.path}: no such video file")
        if self.path.stat().st_size == 0:
            raise MedvidError(f"{self.path}: empty file (0 bytes)")
        self._num_threads = num_threads
        self._random: _Reader | None = None  # random access, opened lazily in auto mode
        errors = []
        order = ["pyav", "decord"] if backend == "auto" else [backend]
        for name in order:
            try:
                self._streamer: _Reader | None = _READERS[name](self.path, num_threads)
                break
            except MedvidError as exc:
                errors.append(f"{name}: {exc}")
        else:
            raise MedvidError(f"{self.path}: cannot decode video ({'; '.join(errors)})")
        if backend != "auto" or self._streamer.name == "decord":
            self._random = self._streamer
        self._meta = self._streamer
        if self._meta.n_frames <= 0:
            self.close()
            raise MedvidError(f"{self.path}: video has no frames")
        self._timestamps: np.ndarray | None = None

    @property
    def backend(self) -> str:
        """The decoder used for random access (opens it in auto mode)."""
        return self._random_reader().name

    def _random_reader(self) -> "_Reader":
        if self._random is None:
            try:
                self._random = _DecordReader(self.path, self._num_threads)
            except MedvidError:
                self._random = self._streamer
        return self._random

    # ---- metadata -----------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return float(self._meta.fps)

    @property
    def n_frames(self) -> int:
        return self._meta.n_frames

    @property
    def duration(self) -> float:
        """Seconds covered by the frames (``n_frames / fps``)."""
        return self.n_frames / self.fps

    @property
    def rows(self) -> int:
        """Height of decoded frames."""
        return self._meta.size[0]

    @property
    def cols(self) -> int:
        """Width of decoded frames."""
        return self._meta.size[1]

    @property
    def timestamps(self) -> np.ndarray:
        """Start time (s) of every frame (constant frame rate)."""
        if self._timestamps is None:
            self._timestamps = frame_timestamps(self.n_frames, fps=self.fps)
        return self._timestamps

    def indices_at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Frame index on screen at each time (seconds)."""
        return times_to_indices(times, self.timestamps)

    # ---- frames -------------------------------------------------------------------------
    def frames_at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Frames on screen at ``times`` (seconds) as uint8 ``(T, H, W, 3)``."""
        return self.frames(self.indices_at(times))

    def frames(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed; None = all) as a fresh uint8 ``(T, H, W, 3)``."""
        return self._read(self._random_reader(), np.arange(self.n_frames) if indices is None else indices)

    def _read(self, reader: "_Reader", indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return np.zeros((0, self.rows, self.cols, 3), np.uint8)
        if idx.min() < 0 or idx.max() >= self.n_frames:
            raise IndexError(f"{self.path.name}: frame index out of range [0, {self.n_frames})")
        uniq, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = reader.read(uniq)
        except MedvidError:
            raise
        except Exception as exc:  # decoder errors from the native libraries
            if reader is self._random and reader.name == "decord" and self._streamer.name == "pyav":
                # decord stops at damaged data; PyAV skips the damaged packets and goes on
                log.warning("%s: decord failed (%s); reading with PyAV", self.path.name, type(exc).__name__)
                self._random = self._streamer
                return self._read(self._random, idx)
            raise MedvidError(f"{self.path}: decoding failed ({type(exc).__name__}: {exc})") from exc
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return frames  # already in order: no copy
        return frames[inverse]

    def clip(self, start_s: float, end_s: float, num_frames: int) -> np.ndarray:
        """``num_frames`` frames spread evenly over ``[start_s, end_s)``."""
        return self.frames_at(span_times(start_s, end_s, num_frames))

    def iter_batches(
        self, fps: float = 1.0, batch_size: int = 32, start_s: float = 0.0, end_s: float | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``(times, frames)`` batches sampled every ``1/fps`` s; decodes lazily, in order."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        end = self.duration if end_s is None else min(end_s, self.duration)
        times = regular_times(end, fps, start_s=start_s)
        indices = self.indices_at(times)
        reader = self._streamer
        if isinstance(reader, _PyAVReader):
            reader.expect(indices)
        for i in range(0, len(times), batch_size):
            yield times[i : i + batch_size], self._read(reader, indices[i : i + batch_size])

    def close(self) -> None:
        closed = set()
        for name in ("_streamer", "_random"):
            reader = getattr(self, name, None)
            if reader is not None and id(reader) not in closed:
                reader.close()
                closed.add(id(reader))
            setattr(self, name, None)

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Video({self.path.name!r}, fps={self.fps:.3f}, "
                f"frames={self.n_frames}, size={self.rows}x{self.cols})")


class _Reader:
    """Backend protocol: metadata plus ``read(sorted unique indices) -> uint8 (N, H, W, 3)``."""

    name: str
    fps: float
    n_frames: int
    size: tuple[int, int]

    def read(self, indices: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        pass


class _DecordReader(_Reader):
    name = "decord"

    def __init__(self, path: Path, num_threads: int):
        import decord

        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as exc:
            raise MedvidError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self.fps = float(self._vr.get_avg_fps())
        self.n_frames = len(self._vr)
        if self.fps <= 0:
            raise MedvidError("no frame rate in the stream")
        if self.n_frames > 0:
            h, w = self._vr[0].shape[:2]
            self._vr.seek(0)
            self.size = (int(h), int(w))
        else:
            self.size = (0, 0)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._vr.get_batch(indices.tolist()).asnumpy()

    def close(self) -> None:
        self._vr = None


class _PyAVReader(_Reader):
    """Sequential decoder with keyframe seeks; keeps its position so in-order reads never re-seek.

    Packets whose frame is not wanted are decoded with ``skip_frame="NONREF"``: FFmpeg then drops
    them if no other frame references them (B-frames), which is exact and roughly halves the
    decoding work when sampling sparsely. ``expect`` announces upcoming targets so that a frame
    already in the decoder's pipeline is not dropped; should one be missed anyway, the reader
    seeks back and decodes it without skipping.
    """

    name = "pyav"

    def __init__(self, path: Path, num_threads: int):
        import av

        try:
            self._container = av.open(str(path))
            if not self._container.streams.video:
                raise MedvidError("no video stream")
            self._stream = self._container.streams.video[0]
        except MedvidError:
            raise
        except Exception as exc:
            raise MedvidError(f"{type(exc).__name__}: {exc}") from exc
        s = self._stream
        s.thread_type = "AUTO"
        if num_threads:
            s.thread_count = num_threads
        rate = s.average_rate or s.guessed_rate
        if not rate:
            raise MedvidError("no frame rate in the stream")
        self._rate = Fraction(rate)
        self.fps = float(self._rate)
        self._tb = Fraction(s.time_base)
        self._start = s.start_time or 0
        self._pts_to_index = float(self._tb * self._rate)
        self.n_frames = int(s.frames) or self._count_packets()
        self.size = (int(s.codec_context.height), int(s.codec_context.width))
        self._frames: Iterator | None = None
        self._pos = -1  # index of the last decoded frame
        self._wanted: set[int] = set()
        self._skipping = True
        self._path = path
        self.damaged_packets = 0

    def _count_packets(self) -> int:
        """Frame count for containers that do not store it: demux (no decode) and count."""
        n = sum(1 for p in self._container.demux(self._stream) if p.size > 0)
        self._container.seek(0)
        return n

    def _index(self, pts: int) -> int:
        return int(round((pts - self._start) * self._pts_to_index))

    def expect(self, indices: Sequence[int]) -> None:
        """Frames that will be asked for soon (never skipped while decoding)."""
        self._wanted.update(int(i) for i in indices)

    def _decode(self) -> Iterator:
        import av

        cc = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            if packet.pts is None or not self._skipping:
                cc.skip_frame = "DEFAULT"
            else:
                cc.skip_frame = "DEFAULT" if self._index(packet.pts) in self._wanted else "NONREF"
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:  # a damaged packet: skip it, as FFmpeg's CLI does
                self.damaged_packets += 1
                if self.damaged_packets == 1:
                    log.warning("%s: damaged data near %.1f s skipped; nearby frames may be garbled",
                                self._path.name, self._index(packet.pts or 0) / self.fps)
                continue
            yield from frames

    def _seek(self, index: int) -> None:
        pts = self._start + int((Fraction(index) / self._rate) / self._tb)
        self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._pos = -1

    def _next_at_or_after(self, target: int):
        frame = None
        for frame in self._frames:
            self._pos = self._index(frame.pts)
            if self._pos >= target:
                return frame
        self._frames = None
        if frame is None:
            raise MedvidError(f"frame {target} could not be decoded (stream ended)")
        log.warning("stream ended at frame %d before frame %d; using the last frame", self._pos, target)
        return frame

    def read(self, indices: np.ndarray) -> np.ndarray:
        self.expect(indices)
        out = np.empty((len(indices), *self.size, 3), np.uint8)
        for k, target in enumerate(indices.tolist()):
            if self._frames is None or target <= self._pos or target - self._pos > _PYAV_SEEK_AHEAD:
                self._seek(int(target))
            frame = self._next_at_or_after(target)
            if self._pos > target:  # dropped as non-reference before it was announced: decode it again
                self._skipping = False
                self._seek(int(target))
                frame = self._next_at_or_after(target)
                self._skipping = True
            self._wanted.discard(target)
            # one scaling thread: PyAV 18 otherwise starts swscale slice threads, which deadlock in a forked
            # DataLoader worker whose parent had started them
            out[k] = frame.to_ndarray(format="rgb24", threads=1)
        return out

    def close(self) -> None:
        self._frames = None
        self._container.close()


_READERS = {"decord": _DecordReader, "pyav": _PyAVReader}


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float | Fraction = 25, crf: int = 23,
                gop: int | None = None, audio: tuple[np.ndarray, int] | None = None,
                size: tuple[int, int] | None = None) -> int:
    """Encode uint8 RGB frames (any iterable of ``(H, W, 3)``: streamed, never held whole) as H.264 MP4
    (libx264, yuv420p, index first so browsers start playing at once), atomically; returns the count.

    ``gop``: keyframe interval in frames (default: one second; short keeps random access cheap).
    ``size``: ``(width, height)`` to scale to (even numbers for yuv420p); default the frames' size.
    ``audio`` = (mono float32 samples in [-1, 1], sample rate) is muxed as AAC.
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as c:
            vs = a_s = None
            for frame in frames:
                if vs is None:  # every stream must exist before the first packet is muxed
                    vs = c.add_stream("libx264", rate=rate)
                    vs.width, vs.height = size or (frame.shape[1], frame.shape[0])
                    vs.pix_fmt = "yuv420p"
                    vs.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop or max(1, round(float(rate))))}
                    if audio is not None:
                        a_s = c.add_stream("aac", rate=audio[1])
                        a_s.layout = "mono"
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for pkt in vs.encode(vf.reformat(vs.width, vs.height, format="yuv420p")):
                    c.mux(pkt)
                n += 1
            if vs is None:
                raise MedvidError(f"{Path(path).name}: no frames to write")
            for pkt in vs.encode():
                c.mux(pkt)
            if a_s is not None:
                _mux_audio(c, a_s, *audio)
    return n


def _mux_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    import av

    x = np.clip(np.asarray(samples, np.float32), -1, 1)
    chunk = 1024
    for i in range(0, len(x), chunk):
        fr = av.AudioFrame.from_ndarray(x[None, i : i + chunk].copy(), format="flt", layout="mono")
        fr.sample_rate = rate
        fr.pts = i
        for pkt in stream.encode(fr):
            container.mux(pkt)
    for pkt in stream.encode():
        container.mux(pkt)
