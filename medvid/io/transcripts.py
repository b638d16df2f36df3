"""Timed transcripts: SRT, WebVTT, Whisper-style JSON and CSV, several ASR sources per video.

Files sit beside the video: ``<name>.<ext>`` or ``<name>.<source>.<ext>`` (e.g.
``talk.whisper.json``, ``talk.aws.csv``); the source of a plain ``<name>.<ext>`` is ``"default"``.

Validation (``read_transcript``). Always errors, naming file and line (JSON: segment number):
unreadable encodings (not UTF-8), malformed times, negative times, spans that end before they
start. Repaired when ``repair=True`` (the default), each repair logged once per file:

- segments out of order are sorted by start time;
- a segment that overlaps the next one is cut to end where the next starts (ASR systems often
  overlap by a few hundred ms); a segment left with no duration by that is dropped;
- segments with empty text (after stripping markup) are dropped.

With ``repair=False`` these raise instead. ``fit_to_duration`` checks a transcript against its
video: spans past the end are clipped only within a tolerance, otherwise it is an error with numbers.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medvid.errors import MedvidError

log = logging.getLogger("medvid")

TRANSCRIPT_EXTS = (".srt", ".vtt", ".json", ".csv")
DEFAULT_SOURCE = "default"

_TIME = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?\s*$")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Segment:
    """One timed sentence; ``line`` is where it was read from (1-based, 0 when unknown)."""

    start: float
    end: float
    text: str
    line: int = 0


@dataclass
class Transcript:
    """The segments of one transcript file, in time order."""

    segments: list[Segment]
    source: str = DEFAULT_SOURCE
    path: Path | None = None
    repairs: list[str] = field(default_factory=list)

    @property
    def end(self) -> float:
        return max((s.end for s in self.segments), default=0.0)

    def overlapping(self, start: float, end: float) -> list[Segment]:
        """Segments that overlap ``[start, end)``."""
        return [s for s in self.segments if s.start < end and s.end > start]


def parse_time(value: str) -> float:
    """``HH:MM:SS,mmm`` / ``MM:SS.mmm`` / plain seconds -> seconds."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    m = _TIME.match(value)
    if not m:
        raise ValueError(f"bad time {value!r}")
    h, mnt, sec, frac = m.groups()
    ms = int((frac or "0").ljust(3, "0"))
    return int(h or 0) * 3600 + int(mnt) * 60 + int(sec) + ms / 1000


def _clean(text: str) -> str:
    return " ".join(_TAG.sub("", text).split())


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MedvidError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); re-save the file as UTF-8") from None


def _parse_cues(path: Path, text: str, vtt: bool) -> list[Segment]:
    """SRT and WebVTT cues: optional id line, ``start --> end`` line, text lines, blank line."""
    lines = text.splitlines()
    segs: list[Segment] = []
    i = 0
    if vtt:
        if not lines or not lines[0].startswith("WEBVTT"):
            raise MedvidError(f"{path}:1: a WebVTT file must start with 'WEBVTT'")
        i = 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block_start = i
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i])
            i += 1
        if vtt and block[0].split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            continue
        t = next((k for k, b in enumerate(block[:2]) if "-->" in b), None)
        if t is None:
            raise MedvidError(f"{path}:{block_start + 1}: expected a 'start --> end' time line")
        lineno = block_start + t + 1
        left, _, right = block[t].partition("-->")
        try:
            start, end = parse_time(left), parse_time(right.split()[0] if right.split() else "")
        except ValueError as exc:
            raise MedvidError(f"{path}:{lineno}: {exc}") from None
        segs.append(Segment(start, end, _clean(" ".join(block[t + 1 :])), lineno))
    return segs


def _parse_json(path: Path, text: str) -> list[Segment]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MedvidError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    items = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise MedvidError(f"{path}: expected {{\"segments\": [{{\"start\", \"end\", \"text\"}}, ...]}}")
    segs = []
    for k, item in enumerate(items, start=1):
        try:
            segs.append(Segment(float(item["start"]), float(item["end"]), _clean(str(item.get("text", ""))), k))
        except (KeyError, TypeError, ValueError) as exc:
            raise MedvidError(f"{path}: segment {k}: needs numeric start/end and text ({type(exc).__name__}: {exc})") from None
    return segs


def _parse_csv(path: Path, text: str) -> list[Segment]:
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if not {"start", "end", "text"} <= set(cols):
        raise MedvidError(f"{path}:1: CSV header must have start,end,text columns, got {reader.fieldnames}")
    reader.fieldnames = cols
    segs = []
    for row in reader:
        lineno = reader.line_num
        try:
            segs.append(Segment(parse_time(row["start"] or ""), parse_time(row["end"] or ""), _clean(row["text"] or ""), lineno))
        except ValueError as exc:
            raise MedvidError(f"{path}:{lineno}: {exc}") from None
    return segs


def _where(path: Path, seg: Segment, json_file: bool) -> str:
    return f"{path}: segment {seg.line}" if json_file else f"{path}:{seg.line}"


def read_transcript(path: str | os.PathLike, source: str | None = None, repair: bool = True) -> Transcript:
    """Read and validate one transcript file (format from its extension)."""
    path = Path(path)
    if not path.is_file():
        raise MedvidError(f"{path}: transcript not found")
    ext = path.suffix.lower()
    if ext not in TRANSCRIPT_EXTS:
        raise MedvidError(f"{path}: unknown transcript format {ext!r}; expected one of {TRANSCRIPT_EXTS}")
    text = _read_text(path)
    segs = {".srt": lambda: _parse_cues(path, text, vtt=False), ".vtt": lambda: _parse_cues(path, text, vtt=True),
            ".json": lambda: _parse_json(path, text), ".csv": lambda: _parse_csv(path, text)}[ext]()
    is_json = ext == ".json"
    for s in segs:
        if s.start < 0 or s.end < 0:
            raise MedvidError(f"{_where(path, s, is_json)}: negative time ({s.start} --> {s.end})")
        if s.end < s.start:
            raise MedvidError(f"{_where(path, s, is_json)}: span ends before it starts ({s.start} --> {s.end})")
    repairs: list[str] = []

    def fix(msg: str, seg: Segment) -> None:
        if not repair:
            raise MedvidError(f"{_where(path, seg, is_json)}: {msg} (repair=False)")
        repairs.append(f"{_where(path, seg, is_json)}: {msg}")

    for a, b in zip(segs, segs[1:]):
        if b.start < a.start:
            fix("segments out of order; sorted by start time", b)
            break
    segs = sorted(segs, key=lambda s: (s.start, s.end))
    out: list[Segment] = []
    for k, s in enumerate(segs):
        if not s.text:
            fix("empty text; segment dropped", s)
            continue
        nxt = next((n for n in segs[k + 1 :] if n.text), None)
        if nxt is not None and s.end > nxt.start:
            fix(f"overlaps the next segment by {s.end - nxt.start:.3f} s; end cut to {nxt.start}", s)
            s = Segment(s.start, nxt.start, s.text, s.line)
            if s.end <= s.start:
                fix("no duration left after the overlap cut; segment dropped", s)
                continue
        out.append(s)
    if repairs:
        log.warning("%s: %d repair(s), first: %s", path.name, len(repairs), repairs[0])
    if source is None:
        source = transcript_source(path)
    return Transcript(out, source=source, path=path, repairs=repairs)


def transcript_source(path: Path) -> str:
    """``talk.whisper.json`` -> ``"whisper"``; ``talk.json`` -> ``"default"``."""
    parts = Path(path).name.split(".")
    return parts[-2] if len(parts) >= 3 else DEFAULT_SOURCE


def find_transcripts(video_path: str | os.PathLike) -> dict[str, Path]:
    """Transcript files beside a video, by source name."""
    video_path = Path(video_path)
    stem = video_path.stem
    found: dict[str, Path] = {}
    for p in sorted(video_path.parent.glob(f"{glob_escape(stem)}.*")):
        if p == video_path or p.suffix.lower() not in TRANSCRIPT_EXTS:
            continue
        middle = p.name[len(stem) + 1 : -len(p.suffix)]
        if "." in middle:  # belongs to another video whose name starts with ours plus a dot
            continue
        source = middle or DEFAULT_SOURCE
        if source in found:
            raise MedvidError(f"{video_path}: two transcripts for source {source!r}: {found[source].name}, {p.name}")
        found[source] = p
    return found


def glob_escape(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def fit_to_duration(t: Transcript, duration_s: float, tolerance_s: float = 2.0) -> Transcript:
    """Check a transcript against its video's length.

    Spans ending up to ``tolerance_s`` after the video are clipped to it (logged); a transcript
    reaching further is an error with the numbers (likely the wrong transcript for this video).
    """
    if t.end > duration_s + tolerance_s:
        late = sum(s.end > duration_s for s in t.segments)
        raise MedvidError(f"{t.path}: transcript runs to {t.end:.2f} s but the video lasts {duration_s:.2f} s "
                          f"({late} segment(s) past the end; tolerance {tolerance_s} s)")
    if t.end <= duration_s:
        return t
    segs = [Segment(s.start, min(s.end, duration_s), s.text, s.line) for s in t.segments if s.start < duration_s]
    msg = f"{t.path}: last segment clipped from {t.end:.2f} s to the video end {duration_s:.2f} s"
    log.warning("%s", msg)
    return Transcript(segs, source=t.source, path=t.path, repairs=t.repairs + [msg])


def write_whisper_json(path: str | os.PathLike, segments: list[Segment], **meta) -> None:
    """Write Whisper-style JSON (``{"segments": [...], **meta}``) atomically."""
    from medvid.utils import atomic_write_text

    data = {**meta, "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in segments]}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
