"""`medvid ingest ROOT --out DIR`: index an echo DICOM export, or a folder of echo videos in the EchoNet-Dynamic
layout (``ROOT/FileList.csv``), into a de-identified ingest folder.

The work is ``medvid.ingest.ingest``; the folder's contract is ``medvid.io.ingest_folder`` (``videos.parquet``,
``errors.jsonl``, companion tables re-keyed to pseudonyms, the local key folder).
"""
from __future__ import annotations

from dataclasses import dataclass

from medvid.ingest import IngestSettings, ingest


@dataclass
class Config(IngestSettings):
    """The job's settings are the library's ``IngestSettings``."""


def run(cfg: Config) -> dict:
    return ingest(cfg)
