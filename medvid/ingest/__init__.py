"""``medvid ingest``: a DICOM export or an EchoNet-Dynamic video folder → a de-identified ingest folder.

``ingest(settings)`` dispatches on the root: a folder holding ``FileList.csv`` is read as the EchoNet-Dynamic
layout (``medvid.ingest.echonet``), anything else as a DICOM export (``medvid.ingest.dicom_export``). Both
write the same contract through ``medvid.io.ingest_folder.IngestFolder``. This package sits beside
``medvid.report`` in the layers (it scrubs report text with ``medvid.report.scrub``).
"""
from __future__ import annotations

from pathlib import Path

from medvid.errors import MedvidError
from medvid.ingest.settings import IngestSettings
from medvid.io.echo_videos import is_echonet_root

__all__ = ["IngestSettings", "ingest"]


def ingest(settings: IngestSettings) -> dict:
    """Ingest ``settings.dicom_root`` into ``settings.out``; returns the summary (counts, matches, errors)."""
    root = Path(settings.dicom_root)
    if not settings.dicom_root or not root.is_dir():
        raise MedvidError(f"DICOM root is not a folder: {settings.dicom_root!r}")
    if is_echonet_root(root):  # a folder of echo videos with its FileList table
        from medvid.ingest.echonet import ingest_echonet

        return ingest_echonet(settings)
    from medvid.ingest.dicom_export import ingest_dicom

    return ingest_dicom(settings)
