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

__all__ = ["IngestSettings", "ingest", "ingested"]


def ingest(settings: IngestSettings) -> dict:
    """Ingest ``settings.dicom_root`` into ``settings.out``; returns the summary (counts, matches, errors)."""
    root = Path(settings.dicom_root)
    if not settings.dicom_root or not root.is_dir():
        raise MedvidError(f"DICOM root is not a folder: {settings.dicom_root!r}")
    check_input_files(settings)
    _claim_out(settings)
    if is_echonet_root(root):  # a folder of echo videos with its FileList table
        from medvid.ingest.echonet import ingest_echonet

        return ingest_echonet(settings)
    from medvid.ingest.dicom_export import ingest_dicom

    return ingest_dicom(settings)


INPUT_FILES = ("reports", "labels", "views", "sr_measurements")  # settings naming a file ingest reads


def check_input_files(settings: IngestSettings) -> None:
    """Before any file is scanned: every file a setting names exists, or one error naming each missing one with
    its setting (relative paths resolve against the working folder, which the error names)."""
    missing = [f"{name}={value} (looked for {Path(value).absolute()})" for name in INPUT_FILES
               if (value := getattr(settings, name)) and not Path(value).is_file()]
    if missing:
        raise MedvidError(f"input file(s) not found: {'; '.join(missing)}. Relative paths resolve against the working "
                          f"folder ({Path.cwd()}); give absolute paths or run from the folder they are relative to")


def _claim_out(settings: IngestSettings) -> None:
    """Claim ``settings.out`` (:func:`medvid.runs.claim_out`): a rerun with the same settings resumes (the scan
    cache), other settings are refused unless ``overwrite``. Paths are recorded as digests only (a folder name
    can identify a patient; ``OUT`` is shareable) and the salt only as given or not (it is a secret)."""
    from medvid.io.ingest_folder import KEY_DIR, IngestFolder
    from medvid.runs import claim_out, run_settings

    record = run_settings(settings, ignore=("out", "resume", "retry_interrupted", "progress", "overwrite"), names=False)
    record["salt"] = "given" if settings.salt else ""
    claim_out(settings.out, "ingest", record, overwrite=settings.overwrite, has_results=IngestFolder(settings.out).exists(),
              own=lambda out: IngestFolder(out).exists() or (out / KEY_DIR).is_dir())


def ingested(source: str | Path, files_root: str, out: Path, *, progress: bool = True,
             root_setting: str = "dicom_root") -> tuple[Path, Path]:
    """``(ingest folder, root of its files)`` for a job's input: an ingest folder as it is (its files lie under
    ``files_root``, named to the user as ``root_setting``), any other folder ingested into ``out`` first."""
    from medvid.config import load_config
    from medvid.io.ingest_folder import IngestFolder

    src = Path(source)
    if IngestFolder(src).exists():
        if not files_root or not Path(files_root).is_dir():
            raise MedvidError(f"{src} is an ingest folder: give {root_setting}=<the folder it was ingested from>")
        return src, Path(files_root)
    ingest(load_config(IngestSettings, "ingest", None,
                       [f"dicom_root={src}", f"out={out}", f"progress={str(progress).lower()}"]))
    return out, src
