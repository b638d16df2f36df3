"""Echo DICOM cine loops: discovery, header inspection, frame timing, lazy per-frame decoding.

``DicomCine`` parses a file's header once (without pixel data) and decodes only the frames asked
for. JPEG Baseline loops (what ultrasound machines write) take the fast path: the frame's bytes
come from the encapsulated stream through ``pydicom.encaps.get_frame`` and Pillow (libjpeg-turbo)
decodes them straight to RGB. Every other transfer syntax goes through ``pydicom.pixels.iter_pixels``
with the same frame indices, so it too decodes only what is used; GE's private syntax (big-endian pixel data)
reads and swaps each frame's bytes, and MPEG-2 / H.264 / HEVC loops decode with PyAV (``dicom_video``). Output
is always ``uint8 (T, H, W, 3)`` RGB.

``inspect_file`` classifies a file as a usable cine loop or raises ``DicomFileError`` with a typed reason; it
reads the header only and decodes a single frame (the last, which is what a truncated file loses; a cut file
is ``truncated`` with the number of leading frames still readable). The object type is decided by SOP class
(``object_kind``): US Multi-frame and multi-frame US Image are cines; structured reports, multi-frame
Secondary Capture, Enhanced US Volume and cines hidden in vendor private tags get their own reasons.
Containers as exports hold them: Deflated Explicit VR files decode through ``dcmread``; files without preamble
or file meta are re-read with ``force=True`` when the forced header holds a SOP class or instance UID; zip and
gzip archives are reported as ``archive`` (not unpacked). Nothing here logs or returns identifiers:
de-identified metadata goes through ``cine_metadata`` with a keyed pseudonym salt.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import apply_color_lut, apply_voi_lut, get_decoder, iter_pixels
from pydicom.pixels.utils import as_pixel_options, get_expected_length
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, RLELossless, UID,
                         register_transfer_syntax)

from medvid.errors import MedvidError
from medvid.io.dicom_video import VIDEO_SYNTAXES, StreamTooLarge, decode_frames, read_stream
from medvid.io.regions import (as_float, describe_regions, is_calibrated, layout_from_regions, still_regions,
                               still_type)
from medvid.io.timing import frame_timestamps
from medvid.utils import pseudonym

# Typed reasons a file is not a usable cine loop (errors.jsonl ``reason``).
REASONS: tuple[str, ...] = (
    "not_dicom", "archive", "dicomdir", "unreadable", "truncated", "structured_report", "private_cine",
    "no_pixel_data", "missing_uid", "not_ultrasound", "volume_3d", "secondary_capture", "other_object",
    "single_frame", "unsupported_transfer_syntax", "decode_error", "duplicate", "too_large", "outside_root",
    "interrupted", "missing_file",
)
# Largest decoded pixel data (frames × rows × columns × samples × bytes) a header may declare, and largest size a
# deflated dataset may inflate to: 2 GiB, about ten times a long 4-D echo. ``max_bytes`` / ``max_pixel_mb`` change it.
MAX_PIXEL_BYTES = 2 << 30

US_MULTIFRAME = UID("1.2.840.10008.5.1.4.1.1.3.1")
# GE's private "Implicit VR Big Endian": the dataset is Implicit VR Little Endian, the pixel data big endian.
GE_PRIVATE_IMPLICIT = UID("1.2.840.113619.5.2")
GE_PRIVATE_IMPLICIT.set_private_encoding(True, True)
_DICOMDIR_SOP = UID("1.2.840.10008.1.3.10")
# Object kinds by SOP class: US Multi-frame and US Image (also their retired classes) carry cines.
_SOP_KINDS: dict[str, str] = {
    **dict.fromkeys(("1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.3",
                     "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6"), "cine"),
    "1.2.840.10008.5.1.4.1.1.6.2": "volume_3d",  # Enhanced US Volume (3D/4D)
    **dict.fromkeys(("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
                     "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4"), "secondary_capture"),
    **dict.fromkeys(("1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
                     "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
                     "1.2.840.10008.5.1.4.1.1.88.35"), "structured_report"),
}
# A private OB/OW/UN element at least this long, in a file without Pixel Data, is a vendor cine.
_PRIVATE_CINE_BYTES = 16384
_ARCHIVE_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x1f\x8b", "gzip"), (b"7z\xbc\xaf", "7z"),
                  (b"Rar!", "rar"))
_PILLOW_JPEG = (JPEGBaseline8Bit, JPEGExtended12Bit)
_PILLOW_YBR = ("YBR_FULL_422", "YBR_FULL")
_PLAUSIBLE_FPS = (0.5, 1000.0)
_PLAUSIBLE_BPM = (20.0, 300.0)


class DicomFileError(MedvidError):
    """A file that is not a usable cine loop; ``reason`` is one of ``REASONS``, ``detail`` carries no PHI."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def find_files(root: str | os.PathLike) -> list[Path]:
    """Every regular file under ``root`` that stays inside it (see ``scan_root``)."""
    return scan_root(root)[0]


def scan_root(root: str | os.PathLike, follow_symlinks: bool = False) -> tuple[list[Path], list[Path]]:
    """``(files, links out)``: every regular file under ``root`` (any name, with or without extension; dot-files
    skipped), in a stable order, and the symbolic links (to files or folders) that lead outside ``root``.

    Links that stay inside ``root`` are followed, each real folder walked once (no loops, no copies). Links out
    are listed, not read, unless ``follow_symlinks``: an export is what lies under its root.
    """
    root = Path(root)
    if not root.is_dir():
        raise MedvidError(f"not a folder: {root}")
    real_root = root.resolve()
    files: list[Path] = []
    links_out: list[Path] = []
    walked: set[str] = set()

    def leaves(path: Path) -> bool:  # only a link can lead out of a folder already known to be inside
        return not follow_symlinks and path.is_symlink() and not path.resolve().is_relative_to(real_root)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in walked:
            dirnames[:] = []
            continue
        walked.add(real)
        here = Path(dirpath)
        links_out.extend(here / d for d in sorted(dirnames) if leaves(here / d))
        dirnames[:] = sorted(d for d in dirnames if not leaves(here / d))
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = here / name
            if leaves(path):
                links_out.append(path)
            elif path.is_file():
                files.append(path)
    return files, links_out


@dataclass
class DicomdirIndex:
    """What a DICOMDIR lists (``read_dicomdir``): the files found inside the root, and the relative paths of
    the listed files that are not there or that lead outside the root (refused, never read)."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


def is_dicomdir_name(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def read_dicomdir(path: str | os.PathLike, root: str | os.PathLike, follow_symlinks: bool = False,
                  max_bytes: int = MAX_PIXEL_BYTES) -> DicomdirIndex | None:
    """The files a DICOMDIR (PS3.10 media index) lists, or None when ``path`` is not one (or is larger than
    ``max_bytes``, or unreadable).

    Each record's ``ReferencedFileID`` (path components relative to the DICOMDIR's folder, often uppercase
    ISO 9660 names such as ``PAT1/STU1/SER1/IMG0001``) is resolved inside ``root``: a component that is not a
    plain name (``..``, empty, a separator, a drive) is refused as ``outside``, and so is a path whose real
    location (after symbolic links) leaves ``root`` unless ``follow_symlinks``. A name that differs only in
    case from the one on disk is matched (media copied to a case-sensitive file system)."""
    path, real_root = Path(path), Path(root).resolve()
    try:
        if path.stat().st_size > max_bytes:
            return None
        with quiet_pydicom():
            ds = dcmread(path, force=False)
    except Exception:  # noqa: BLE001 - not an index: read as any other file
        return None
    if sop_class_of(ds) != _DICOMDIR_SOP and "DirectoryRecordSequence" not in ds:
        return None
    index, seen = DicomdirIndex(), set()
    for record in ds.get("DirectoryRecordSequence") or []:
        value = record.get("ReferencedFileID")
        if not value:
            continue
        parts = [str(value)] if isinstance(value, str) else [str(p) for p in value]
        rel = "/".join(parts)
        if rel in seen:
            continue
        seen.add(rel)
        if any(p in ("", ".", "..") or re.search(r"[/\\:]", p) for p in parts):
            index.outside.append(rel)
            continue
        found = _match_case(path.parent, parts)
        if found is None:
            index.missing.append(rel)
        elif not follow_symlinks and not found.resolve().is_relative_to(real_root):
            index.outside.append(rel)
        else:
            index.files.append(found)
    return index


def _match_case(folder: Path, parts: Sequence[str]) -> Path | None:
    """``folder / parts`` as it is on disk, each component matched exactly or else ignoring case; None if absent."""
    for i, part in enumerate(parts):
        nxt = folder / part
        if not (nxt.is_dir() if i < len(parts) - 1 else nxt.is_file()):
            try:
                nxt = next(folder / n for n in sorted(os.listdir(folder)) if n.upper() == part.upper())
            except (OSError, StopIteration):
                return None
        folder = nxt
    return folder if folder.is_file() else None


@contextmanager
def quiet_pydicom() -> Iterator[list[warnings.WarningMessage]]:
    """Silence pydicom's logger and collect its warnings: both can quote file paths and tag values."""
    logger = logging.getLogger("pydicom")
    disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        logger.disabled = disabled


def scrub(message: str, *secrets: str | os.PathLike) -> str:
    """Make an exception message safe for outputs: drop quoted values (keeping DICOM vocabulary such as the
    'DICM' prefix or an attribute keyword, which say what is wrong and name no one) and any path or path
    component."""
    from pydicom.datadict import keyword_dict

    def quoted(m: re.Match[str]) -> str:
        word = m.group(0)[1:-1]
        return m.group(0) if word == "DICM" or word in keyword_dict else "'…'"

    text = re.sub(r"'[^']*'|\"[^\"]*\"", quoted, str(message))
    parts: set[str] = set()
    for secret in secrets:
        s = str(secret)
        parts.add(s)
        parts.update(p for p in Path(s).parts if len(p) > 2)
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, "…")
    return text[:300]


def _read_header(f: BinaryIO) -> tuple[Dataset, tuple[int, int | None] | None, bool]:
    """Header without pixel data, ``(value offset, length or None if undefined)`` of Pixel Data, and
    whether the header needed ``force=True`` (no preamble / no file meta).

    The offset is -1 where positions in the file cannot be used (meta-less files): those decode
    through a full ``dcmread``.
    """
    forced = False
    try:
        ds = dcmread(f, stop_before_pixels=True)
    except InvalidDicomError:
        f.seek(0)
        try:
            ds = dcmread(f, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a forced read of a non-DICOM file fails in many ways
            ds = None
        if ds is None or not any(_is_uid(ds.get(k)) for k in ("SOPClassUID", "SOPInstanceUID")):
            raise
        forced = True
    tsyntax = header_transfer_syntax(ds)
    head = f.read(8)
    if len(head) < 8:
        return ds, None, forced
    endian = "<" if tsyntax.is_little_endian else ">"
    group, elem = struct.unpack(f"{endian}HH", head[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        return ds, None, forced
    if tsyntax.is_implicit_VR:
        (length,) = struct.unpack(f"{endian}L", head[4:8])
    else:
        (length,) = struct.unpack(f"{endian}L", f.read(4))
    offset = -1 if "TransferSyntaxUID" not in ds.file_meta else f.tell()
    return ds, (offset, None if length == 0xFFFFFFFF else int(length)), forced


@contextmanager
def open_dataset(path: Path, max_bytes: int = MAX_PIXEL_BYTES) -> Iterator[tuple[BinaryIO, bool]]:
    """``(stream, deflated)``: the file itself, or for a Deflated Explicit VR file an in-memory copy with the
    dataset inflated (Explicit VR Little Endian). Inflation streams in chunks and stops past ``max_bytes``
    (``too_large``), so a small deflate bomb never inflates in full. GE's private syntax is registered with
    pydicom (idempotent) so that ``dcmread`` reads its dataset as Implicit VR Little Endian."""
    register_transfer_syntax(GE_PRIVATE_IMPLICIT)
    with open(path, "rb") as f:
        try:
            preamble = read_preamble(f, force=False)
            meta = FileMetaDataset(read_dataset(f, is_implicit_VR=False, is_little_endian=True,
                                                stop_when=lambda tag, vr, length: tag >> 16 != 2))
        except Exception:  # noqa: BLE001 - not a conformant file: the header reader decides what it is
            meta = FileMetaDataset()
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            f.seek(0)
            yield f, False
            return
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        out.write(preamble + b"DICM")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if "FileMetaInformationGroupLength" in meta:
            del meta.FileMetaInformationGroupLength
        write_file_meta_info(out, meta, enforce_standard=False)
        _inflate(f, out, max_bytes)
        out.seek(0)
        yield out, True


def _inflate(src: BinaryIO, dst: BinaryIO, max_bytes: int) -> None:
    """Inflate the raw deflate stream of ``src`` into ``dst``, at most ``max_bytes`` (else ``too_large``)."""
    inflater, written = zlib.decompressobj(-zlib.MAX_WBITS), 0
    while not inflater.eof:
        chunk = inflater.unconsumed_tail or src.read(1 << 16)
        if not chunk:
            break
        piece = inflater.decompress(chunk, 1 << 20)
        written += len(piece)
        if written > max_bytes:
            raise DicomFileError("too_large", f"deflated dataset inflates to more than {_mib(max_bytes)}")
        dst.write(piece)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def header_transfer_syntax(ds: Dataset) -> UID:
    """The file meta's transfer syntax, else the one a forced read found (implicit/explicit, endianness)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        uid = UID(str(meta.TransferSyntaxUID))
        return GE_PRIVATE_IMPLICIT if uid == GE_PRIVATE_IMPLICIT else uid
    implicit, little = ds.original_encoding
    if implicit is None:
        return ExplicitVRLittleEndian
    return ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _is_uid(value: Any) -> bool:
    return bool(value) and re.fullmatch(r"[0-9]+(\.[0-9]+)+", str(value)) is not None


def object_kind(ds: Dataset) -> str:
    """``cine``, ``structured_report``, ``volume_3d``, ``secondary_capture``, ``other`` (a known SOP class
    that is none of these) or ``unknown`` (no SOP class: judged by frame count alone)."""
    sop = sop_class_of(ds)
    return _SOP_KINDS.get(str(sop), "other" if sop else "unknown")


def sop_class_of(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    return UID(str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")))


def _private_cine_bytes(ds: Dataset) -> int:
    """Length of the largest private binary element (vendors keep raw cine data in private tags)."""
    sizes = [len(elem.value or b"") for elem in ds if elem.tag.is_private and elem.VR in ("OB", "OW", "UN")]
    return max(sizes, default=0)


def archive_kind(path: Path) -> str | None:
    """``zip`` / ``gzip`` / ``7z`` / ``rar`` when the file starts with that archive's magic bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _ARCHIVE_MAGIC if head.startswith(magic)), None)


def _ends_mid_element(ds: Dataset, f: BinaryIO) -> bool:
    """True when a header read stopped at end of file inside an element (pydicom stops silently)."""
    size = f.seek(0, io.SEEK_END)
    meta_length = ds.file_meta.get("FileMetaInformationGroupLength") if hasattr(ds, "file_meta") else None
    preamble = 132 if getattr(ds, "preamble", None) is not None else 0
    if meta_length is not None and size < preamble + 12 + int(meta_length):
        return True
    raw = [e for e in ds._dict.values() if hasattr(e, "value_tell")]  # pydicom keeps offsets on raw elements only
    if not raw or raw[-1].length == 0xFFFFFFFF:
        return False
    end = raw[-1].value_tell + raw[-1].length
    return end != size  # past the end: value cut; before it: a partial element header follows


def frame_timing(ds: Dataset, n_frames: int) -> tuple[np.ndarray | None, float | None, str]:
    """Frame start times (s), nominal fps and the tag they came from.

    Order: ``FrameTimeVector`` (per-frame increments, ms), ``FrameTime`` (ms), ``CineRate``,
    ``RecommendedDisplayFrameRate``. Returns ``(None, None, "none")`` when no usable tag exists.
    """
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) == n_frames and n_frames > 1:
        increments = np.asarray([float(v) for v in vector], dtype=np.float64) / 1000.0
        increments[0] = 0.0
        if np.all(increments[1:] > 0):
            times = np.cumsum(increments)
            return times, float(1.0 / np.median(increments[1:])), "FrameTimeVector"
    for keyword, to_fps in (("FrameTime", lambda v: 1000.0 / v), ("CineRate", float),
                            ("RecommendedDisplayFrameRate", float)):
        value = ds.get(keyword)
        try:
            fps = to_fps(float(value)) if value not in (None, "") else None
        except (TypeError, ValueError, ZeroDivisionError):
            fps = None
        if fps is not None and _PLAUSIBLE_FPS[0] <= fps <= _PLAUSIBLE_FPS[1]:
            return frame_timestamps(n_frames, fps=fps), fps, keyword
    return None, None, "none"


def cardiac_timing(ds: Dataset, timestamps: np.ndarray | None) -> tuple[np.ndarray | None, float | None, str]:
    """R-wave times (s from the first frame), heart rate (bpm) and the tag the cycle comes from.

    Order: ``RWaveTimeVector`` (ms), ``RWavePointer`` (1-based frame numbers, needs frame times), then
    ``HeartRate`` alone. Returns ``(None, None, "none")`` when the file says nothing about the cycle.
    """
    bpm = as_float(ds.get("HeartRate"))
    bpm = bpm if bpm is not None and _PLAUSIBLE_BPM[0] <= bpm <= _PLAUSIBLE_BPM[1] else None
    vector = ds.get("RWaveTimeVector")
    if vector:
        times = np.sort(np.asarray([float(v) for v in vector], dtype=np.float64) / 1000.0)
        if len(times) and times[0] >= 0:
            return times, bpm, "RWaveTimeVector"
    pointer = ds.get("RWavePointer")
    if pointer and timestamps is not None:
        frames = np.atleast_1d(np.asarray(pointer, dtype=np.int64))
        frames = frames[(frames >= 1) & (frames <= len(timestamps))]
        if len(frames):
            return np.sort(timestamps[frames - 1]), bpm, "RWavePointer"
    return None, bpm, "HeartRate" if bpm is not None else "none"


class DicomCine:
    """One DICOM instance opened lazily: the header is parsed once, frames are decoded on demand.

    A ``medvid.io.reader.VideoReader``; it holds no open file between calls (each decode opens and closes
    it), so ``close`` has nothing to release."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = MAX_PIXEL_BYTES) -> None:
        self.path, self.max_bytes = Path(path), max_bytes
        with self._open() as (f, self.deflated), quiet_pydicom() as caught:
            self.ds, self._pixels, self.forced = ds, _, _ = _read_header(f)
            value_start = f.tell()
            self.header_warnings = [str(w.message) for w in caught]
            self.header_truncated = self._pixels is None and _ends_mid_element(ds, f)
            # Bytes from the Pixel Data value to the end of the file (or inflated copy): what a cut file still holds.
            self.pixel_bytes_present = f.seek(0, io.SEEK_END) - value_start if self._pixels else None
        if self.deflated:  # positions are in the inflated copy, not the file
            self._pixels = (-1, self._pixels[1]) if self._pixels else None
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        self.transfer_syntax = header_transfer_syntax(ds)
        self.n_frames = _int(ds.get("NumberOfFrames"), 1)
        self.rows, self.cols = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
        self.photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        self.samples_per_pixel = _int(ds.get("SamplesPerPixel"), 1)
        self.bits_allocated = _int(ds.get("BitsAllocated"), 8)
        if self.declared_bytes > max_bytes:  # before anything is sized by the header (frame times, buffers)
            raise DicomFileError("too_large", f"header declares {self.n_frames} frame(s) of {self.rows}×{self.cols}"
                                              f"×{self.samples_per_pixel} ({_mib(self.declared_bytes)}), more than "
                                              f"{_mib(max_bytes)}")
        with quiet_pydicom():
            self.timestamps, self.fps, self.fps_source = frame_timing(ds, self.n_frames)
            self.r_wave_times, self.heart_rate, self.cycle_source = cardiac_timing(ds, self.timestamps)

    @property
    def declared_bytes(self) -> int:
        """Decoded size the header declares: frames × rows × columns × samples × bytes per sample (at least 8
        bytes a frame, what its time stamp takes)."""
        frame = self.rows * self.cols * self.samples_per_pixel * max(-(-self.bits_allocated // 8), 1)
        return max(self.n_frames, 0) * max(frame, 8)

    def _open(self):
        """The file (or its inflated copy): see ``open_dataset``."""
        return open_dataset(self.path, self.max_bytes)

    @property
    def has_pixel_data(self) -> bool:
        return self._pixels is not None

    @property
    def fast_path(self) -> bool:
        """JPEG Baseline colour/grey 8-bit: per-frame bytes + Pillow decode straight to RGB."""
        return (self.transfer_syntax in _PILLOW_JPEG and self.bits_allocated == 8 and self._pixels is not None
                and self._pixels[0] >= 0 and self._pixels[1] is None
                and ((self.samples_per_pixel == 3 and self.photometric in _PILLOW_YBR)
                     or (self.samples_per_pixel == 1 and self.photometric == "MONOCHROME2")))

    def frames(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed) → ``uint8 (T, H, W, 3)`` RGB."""
        idx = np.arange(self.n_frames) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError("no frame indices")
        if idx.min() < 0 or idx.max() >= self.n_frames:
            raise IndexError(f"frame index out of range 0..{self.n_frames - 1}")
        unique, inverse = np.unique(idx, return_inverse=True)
        if self.transfer_syntax in VIDEO_SYNTAXES:
            decoded = self._decode_video(unique)
        elif self.transfer_syntax == GE_PRIVATE_IMPLICIT:
            decoded = self._decode_big_endian_pixels(unique)
        else:
            decoded = self._decode_fast(unique) if self.fast_path else self._decode_pydicom(unique)
        return decoded[inverse]

    def readable_frames(self) -> int:
        """How many leading frames decode (a cut file keeps those before the cut): counted from the bytes native
        pixel data holds, else by bisecting on single-frame decodes (``log2(frames)`` decodes)."""
        length = self._pixels[1] if self._pixels else None
        if length is not None and self.pixel_bytes_present is not None and self.n_frames > 0:
            frame = max(self.declared_bytes // self.n_frames, 1)
            return min(min(length, self.pixel_bytes_present) // frame, self.n_frames)
        lo, hi = 0, self.n_frames  # frames [0, lo) decode; frame hi does not (or is past the end)
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                self.frames([mid])
            except Exception:  # noqa: BLE001 - any failure marks the cut
                hi = mid
            else:
                lo = mid + 1
        return lo

    def encapsulated_items_cut(self) -> bool:
        """True when the encapsulated Pixel Data items run past the end of the file before their sequence
        delimiter (the file was cut; a complete file with a broken codestream ends its items properly)."""
        if not self._pixels or self._pixels[0] < 0 or self._pixels[1] is not None:
            return False
        with open(self.path, "rb") as f:
            end, pos = f.seek(0, io.SEEK_END), self._pixels[0]
            while pos + 8 <= end:
                f.seek(pos)
                group, elem, length = struct.unpack("<HHL", f.read(8))
                if (group, elem) != (0xFFFE, 0xE000):
                    return False  # the delimiter, or damage that is not a cut
                pos += 8 + length
            return True  # the last item runs past the end, or the delimiter is missing

    def close(self) -> None:
        """Nothing to release: no file stays open between decodes."""

    def __enter__(self) -> "DicomCine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decode_fast(self, unique: np.ndarray) -> np.ndarray:
        from PIL import Image

        offset = self._pixels[0]
        eot = self.ds.get("ExtendedOffsetTable")
        extended = (eot, self.ds.ExtendedOffsetTableLengths) if eot and "ExtendedOffsetTableLengths" in self.ds else None
        out = np.empty((len(unique), self.rows, self.cols, 3), dtype=np.uint8)
        with open(self.path, "rb") as f, quiet_pydicom():
            for k, i in enumerate(unique):
                f.seek(offset)
                data = get_frame(f, int(i), number_of_frames=self.n_frames, extended_offsets=extended)
                with Image.open(io.BytesIO(data)) as im:
                    arr = np.asarray(im.convert("RGB"))
                if arr.shape != out.shape[1:]:
                    raise ValueError(f"frame {i} decodes to {arr.shape}, header says {out.shape[1:]}")
                out[k] = arr
        return out

    def _decode_video(self, unique: np.ndarray) -> np.ndarray:
        try:
            stream = read_stream(self.path, self._pixels[0], self.max_bytes)
        except StreamTooLarge as exc:
            raise DicomFileError("too_large", f"video stream longer than {_mib(self.max_bytes)}") from exc
        return decode_frames(stream, unique, (self.rows, self.cols))

    def _decode_big_endian_pixels(self, unique: np.ndarray) -> np.ndarray:
        """GE private syntax: each frame's bytes read from the file, multi-byte samples swapped to little endian
        (8-bit samples need nothing), then decoded by pydicom as native Explicit VR Little Endian data."""
        width = self.bits_allocated // 8
        if self.bits_allocated not in (8, 16, 32):
            raise ValueError(f"{self.bits_allocated}-bit samples in GE private syntax")
        frame = self.rows * self.cols * self.samples_per_pixel * width
        chunks = []  # only the frames asked for: at most their declared size
        with open(self.path, "rb") as f:
            for i in unique:
                f.seek(self._pixels[0] + int(i) * frame)
                chunks.append(f.read(frame))
                if len(chunks[-1]) < frame:
                    raise EOFError(f"end of file inside frame {i}")
        data = b"".join(chunks)
        if width > 1:
            data = np.frombuffer(data, f">u{width}").astype(f"<u{width}").tobytes()
        opts = as_pixel_options(self.ds, number_of_frames=len(unique), transfer_syntax_uid=ExplicitVRLittleEndian,
                                pixel_keyword="PixelData")
        with quiet_pydicom():
            arr, _ = get_decoder(ExplicitVRLittleEndian).as_array(data, **opts)
        samples = (self.samples_per_pixel,) if self.samples_per_pixel > 1 else ()
        return to_rgb_uint8(arr.reshape(len(unique), self.rows, self.cols, *samples), self.ds)

    def _decode_pydicom(self, unique: np.ndarray) -> np.ndarray:
        with quiet_pydicom():
            src: Any = self.path
            if self._pixels is not None and self._pixels[0] < 0:  # deflated / meta-less: read whole, then decode
                with self._open() as (f, _):
                    src = dcmread(f, force=self.forced)
                if self.forced:
                    src.file_meta.TransferSyntaxUID = self.transfer_syntax
            arrays = list(iter_pixels(src, indices=[int(i) for i in unique]))
            return to_rgb_uint8(np.stack(arrays), self.ds)


def to_rgb_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """pydicom-decoded frames ``(T, H, W[, C])`` → ``uint8 (T, H, W, 3)`` RGB (palette, monochrome, >8-bit)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8 and _palette_max(ds) > 255:  # 16-bit LUT entries
            arr = arr >> 8
    elif arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 1):
        arr = arr.reshape(arr.shape[:3])
        if arr.dtype != np.uint8:
            arr = _grey_to_uint8(arr, ds)
        if photometric == "MONOCHROME1":
            arr = 255 - arr
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.dtype != np.uint8:
        bits = _int(ds.get("BitsStored"), 8)
        arr = np.right_shift(arr, max(bits - 8, 0)) if bits > 8 else arr
    return np.clip(arr, 0, 255).astype(np.uint8, copy=False)


def _palette_max(ds: Dataset) -> int:
    """Largest value in the palette LUTs (decides whether 16-bit entries need scaling to 8 bits)."""
    n, first, _ = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    return int(apply_color_lut(np.arange(first, first + (n or 65536)), ds).max())


def _grey_to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """More-than-8-bit greyscale → 0–255 with the file's VOI window when it has one, else its bit depth."""
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        out = apply_voi_lut(arr, ds).astype(np.float64)
        lo, hi = float(out.min()), float(out.max())
        return ((out - lo) * (255.0 / max(hi - lo, 1e-9))).astype(np.uint8)
    bits = _int(ds.get("BitsStored"), 16)
    shifted = arr.astype(np.int64) - (int(arr.min()) if arr.min() < 0 else 0)
    return np.right_shift(shifted, max(bits - 8, 0)).clip(0, 255).astype(np.uint8)


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def inspect_file(path: str | os.PathLike, modalities: Sequence[str] = ("US",), min_frames: int = 2,
                 validate: bool = True, max_bytes: int = MAX_PIXEL_BYTES, stills: bool = False) -> DicomCine:
    """Open ``path`` as a cine loop or raise ``DicomFileError`` with a typed reason.

    Header only (no pixel data read); with ``validate`` the last frame is decoded, which catches
    truncated files, broken codestreams and missing codecs. A header declaring more than ``max_bytes`` of
    decoded pixels, or frames the pixel data cannot hold, is refused before anything is allocated.
    With ``stills``, a one-frame ultrasound image (``is_still``) passes the same checks and is returned
    instead of ``single_frame``.
    """
    with quiet_pydicom():
        return _inspect(Path(path), modalities, min_frames, validate, max_bytes, stills)


def is_still(cine: DicomCine, min_frames: int = 2) -> bool:
    """A single-frame ultrasound image (US Image, US Multi-frame or no SOP class; one frame, fewer than
    ``min_frames``): a Doppler / M-mode measurement still or a 2-D screenshot. Secondary Capture and other
    classes are not stills (worksheets and report pages, no ultrasound regions)."""
    return cine.n_frames == 1 < min_frames and object_kind(cine.ds) in ("cine", "unknown")


def _inspect(path: Path, modalities: Sequence[str], min_frames: int, validate: bool, max_bytes: int,
             stills: bool) -> DicomCine:
    try:
        cine = DicomCine(path, max_bytes)
    except DicomFileError:
        raise
    except InvalidDicomError as exc:
        if kind := archive_kind(path):
            raise DicomFileError("archive", f"{kind} archive: not unpacked; extract it and ingest the folder") from exc
        raise DicomFileError("not_dicom", scrub(exc, path)) from exc
    except PermissionError as exc:
        raise DicomFileError("unreadable", "permission denied") from exc
    except (EOFError, struct.error) as exc:
        raise DicomFileError("truncated", f"header ends early ({type(exc).__name__})") from exc
    except OSError as exc:
        raise DicomFileError("unreadable", f"{type(exc).__name__}: {scrub(exc, path)}") from exc
    except Exception as exc:  # noqa: BLE001 - any parse failure of a damaged header is a typed error
        reason = "truncated" if "end of file" in str(exc).lower() else "unreadable"
        raise DicomFileError(reason, f"{type(exc).__name__}: {scrub(exc, path)}") from exc
    ds = cine.ds
    ended_early = any("end of file" in w.lower() for w in cine.header_warnings)
    sop_class, kind = sop_class_of(ds), object_kind(ds)
    if sop_class == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
        raise DicomFileError("dicomdir", "DICOMDIR index file")
    if kind == "structured_report":
        raise DicomFileError("structured_report", f"{sop_class.name or 'SR'}: no measurements read from it")
    if not cine.has_pixel_data:
        if (size := _private_cine_bytes(ds)) >= _PRIVATE_CINE_BYTES:
            raise DicomFileError("private_cine", f"no Pixel Data; {size} bytes in vendor private tags")
        ended_early = ended_early or cine.header_truncated
        raise DicomFileError("truncated" if ended_early else "no_pixel_data",
                             "file ends before its pixel data" if ended_early else "no Pixel Data element")
    if not ds.get("StudyInstanceUID") or not ds.get("SOPInstanceUID"):
        raise DicomFileError("missing_uid", "no StudyInstanceUID or SOPInstanceUID")
    modality = str(ds.get("Modality", "")).upper()
    if modalities and modality not in {m.upper() for m in modalities}:
        raise DicomFileError("not_ultrasound", f"modality {modality or 'unset'}")
    if kind == "volume_3d":
        raise DicomFileError("volume_3d", "Enhanced US Volume (3D/4D): not a 2-D cine loop")
    if kind == "secondary_capture" and cine.n_frames >= min_frames:
        raise DicomFileError("secondary_capture", f"multi-frame Secondary Capture ({cine.n_frames} frames)")
    if kind == "other" and modality == "US" and cine.n_frames >= min_frames:
        raise DicomFileError("other_object", f"{sop_class.name or 'SOP class'} is not a cine loop class")
    if cine.n_frames < min_frames and not (stills and is_still(cine, min_frames)):
        raise DicomFileError("single_frame", f"{cine.n_frames} frame(s)")
    if cine.rows <= 0 or cine.cols <= 0:
        raise DicomFileError("decode_error", "no Rows/Columns")
    if not _has_decoder(cine.transfer_syntax):
        raise DicomFileError("unsupported_transfer_syntax",
                             f"{cine.transfer_syntax.name or cine.transfer_syntax}: no decoder installed")
    if cine.pixel_bytes_present is not None:
        _check_pixel_data_present(cine)
    if validate:
        try:
            cine.frames([cine.n_frames - 1])
        except DicomFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a typed error
            msg = str(exc).lower()
            short = any(s in msg for s in ("insufficient", "end of file", "reshape", "not enough", "truncat"))
            detail = f"last frame: {type(exc).__name__}: {scrub(exc, path)}"
            if short or cine.encapsulated_items_cut():
                raise DicomFileError("truncated", f"{cine.readable_frames()} of {cine.n_frames} frame(s) "
                                                  f"readable; {detail}") from exc
            raise DicomFileError("decode_error", detail) from exc
    return cine


def _has_decoder(tsyntax: UID) -> bool:
    """Whether frames of ``tsyntax`` can be decoded: pydicom's decoders, PyAV for video, the byte swap here for
    GE's private syntax."""
    if tsyntax in VIDEO_SYNTAXES or tsyntax == GE_PRIVATE_IMPLICIT:
        return True
    try:
        return get_decoder(tsyntax).is_available
    except NotImplementedError:
        return False


def _check_pixel_data_present(cine: DicomCine) -> None:
    """Cheap checks of the frames a header declares against the bytes the file (or inflated copy) holds: native
    Pixel Data must fit in the file and hold every frame; encapsulated data needs an item (8 bytes) per frame (a
    video stream: one item), and RLE at least its 64-byte header per frame plus 1/64 of the decoded size (a run of
    128 bytes takes 2)."""
    length, present = cine._pixels[1], cine.pixel_bytes_present
    if length is not None:
        if length > present:
            raise DicomFileError("truncated", f"pixel data shorter than declared; {cine.readable_frames()} of "
                                              f"{cine.n_frames} frame(s) readable")
        try:
            expected = get_expected_length(cine.ds, unit="bytes")
        except (AttributeError, TypeError, ValueError):
            return
        if length < expected:
            raise DicomFileError("truncated", f"Pixel Data holds {length} bytes; {cine.n_frames} frame(s) of "
                                              f"{cine.rows}×{cine.cols} need {expected}")
        return
    video = cine.transfer_syntax in VIDEO_SYNTAXES
    needed = 8 * (2 if video else cine.n_frames + 1)  # basic offset table item + one item per frame
    if cine.transfer_syntax == RLELossless:
        needed += 64 * cine.n_frames + cine.declared_bytes // 64
    if present < needed:
        raise DicomFileError("truncated", f"{present} bytes of encapsulated pixel data cannot hold "
                                          f"{cine.n_frames} frame(s) of {cine.rows}×{cine.cols} ({needed} needed)")


def cine_metadata(cine: DicomCine, salt: str) -> dict[str, Any]:
    """De-identified description of a cine loop: pseudonymous keys, geometry, timing, codec, device make,
    ultrasound regions (JSON: bounds, formats, calibration) and the layout they imply.

    Patient name/ID/birth date, institution, dates and free-text tags are never copied.
    """
    with quiet_pydicom():
        return _cine_metadata(cine, salt)


def _cine_metadata(cine: DicomCine, salt: str) -> dict[str, Any]:
    ds = cine.ds
    duration = None
    if cine.timestamps is not None and cine.fps:
        duration = float(cine.timestamps[-1] + 1.0 / cine.fps)
    irregular = cine.fps_source == "FrameTimeVector"
    regions = describe_regions(ds, cine.rows, cine.cols)
    return {
        "study_key": pseudonym(str(ds.StudyInstanceUID), salt, prefix="st_"),
        "series_key": pseudonym(str(ds.get("SeriesInstanceUID", "")), salt, prefix="se_"),
        "video_key": pseudonym(str(ds.SOPInstanceUID), salt, prefix="vi_"),
        "patient_key": pseudonym(str(ds.get("PatientID", "")), salt, prefix="pt_") if ds.get("PatientID") else "",
        "accession_key": accession_key(ds.get("AccessionNumber"), salt),
        "frames": cine.n_frames,
        "fps": round(cine.fps, 3) if cine.fps else None,
        "fps_source": cine.fps_source,
        "duration_s": duration,
        "frame_times_s": [float(t) for t in cine.timestamps] if irregular else None,
        "rows": cine.rows,
        "cols": cine.cols,
        "samples_per_pixel": cine.samples_per_pixel,
        "bits_allocated": cine.bits_allocated,
        "photometric_interpretation": cine.photometric,
        "transfer_syntax": str(cine.transfer_syntax),
        "transfer_syntax_name": cine.transfer_syntax.name,
        "sop_class": str(ds.get("SOPClassUID", "")),
        "modality": str(ds.get("Modality", "")),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "lossy": str(ds.get("LossyImageCompression", "")) == "01",
        "burned_in_annotation": str(ds.get("BurnedInAnnotation", "") or "").strip().upper(),
        "heart_rate": cine.heart_rate,
        "r_wave_times_s": [float(t) for t in cine.r_wave_times] if cine.r_wave_times is not None else None,
        "cycle_source": cine.cycle_source,
        "regions": json.dumps(regions),
        "layout": layout_from_regions(regions),
    }


# cine_metadata fields that describe motion: a still has none.
_LOOP_ONLY = ("frames", "fps", "fps_source", "duration_s", "frame_times_s", "r_wave_times_s", "cycle_source")


def still_metadata(cine: DicomCine, salt: str) -> dict[str, Any]:
    """De-identified description of a still (``is_still``): ``cine_metadata`` without the motion fields, keyed by
    ``still_key`` (pseudonym of SOPInstanceUID, as a measurement's ``image_key``), with ``regions`` from
    ``still_regions`` (JSON), ``still_type`` (``spectral_doppler`` / ``m_mode`` / ``2d``) and ``calibrated`` (an
    image region carries physical units and deltas on both axes)."""
    with quiet_pydicom():
        row = {k: v for k, v in _cine_metadata(cine, salt).items() if k not in _LOOP_ONLY}
        regions = still_regions(cine.ds, cine.rows, cine.cols)
    row["still_key"] = row.pop("video_key")
    row.update(regions=json.dumps(regions), still_type=still_type(regions),
               calibrated=is_calibrated(regions))
    return row


def accession_key(accession: Any, salt: str) -> str:
    """Keyed pseudonym of an accession number (``""`` when there is none), as companion CSVs are joined."""
    value = str(accession or "").strip()
    return pseudonym(value, salt, prefix="ac_") if value else ""



# What re-identifies a study when its report is sent to the hospital's own PACS (``medvid pacs push``). Kept only
# in the ingest's private key folder (``IngestFolder.identities``), never in a shareable output.
STUDY_IDENTITY = ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                  "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime")
INSTANCE_IDENTITY = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")


def identity(ds: Dataset) -> dict[str, dict[str, str]]:
    """The study- and instance-level identifiers of a header, as strings (``""`` when absent):
    ``{"study": {keyword: value}, "instance": {keyword: value}}``."""
    with quiet_pydicom():
        def text(keyword: str) -> str:
            value = ds.get(keyword, "")
            return "" if value is None else str(value).strip()
        return {"study": {k: text(k) for k in STUDY_IDENTITY}, "instance": {k: text(k) for k in INSTANCE_IDENTITY}}
