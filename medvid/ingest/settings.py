"""The settings of ``medvid ingest`` (its job ``Config`` is this dataclass; ``configs/ingest.yaml`` may change them)."""
from __future__ import annotations

from dataclasses import dataclass

from medvid.config import setting
from medvid.io.ingest_folder import IngestFolder, ScanCache
from medvid.report.scrub import SCRUBBER_VERSION


@dataclass
class IngestSettings:
    dicom_root: str = setting("", "folder tree of DICOM files, or an EchoNet-Dynamic root (FileList.csv, Videos/)")
    out: str = setting("ingest_out", "ingest folder to write (videos.parquet, errors.jsonl, companion tables)")
    salt: str = setting("", "per-dataset secret for pseudonyms; blank: generated once and kept in the key folder "
                            "(salt.txt)")
    keys_dir: str = setting("", "key folder (salt, paths, resume cache) kept outside OUT, so OUT alone is shareable; "
                                "blank: OUT/LOCAL_KEYS_DO_NOT_SHARE")
    keep_paths: bool = setting(False, "true: also write relative source paths into videos.parquet / errors.jsonl "
                                      "(they can be PHI)")
    reports: str = setting("", "CSV study_uid|accession,report[,split] → OUT/reports.csv keyed by study_key")
    labels: str = setting("", "CSV study_uid|accession,<phenotype columns> → OUT/labels.csv keyed by study_key")
    views: str = setting("", "CSV sop_instance_uid,view → OUT/views.csv keyed by video_key")
    sr_measurements: str = setting("", "YAML mapping SR concept codes → phenotypes (blank: configs/sr_measurements.yaml);"
                                       " labels.csv is derived from vendor measurement SRs, a given labels CSV wins "
                                       "per column")
    modalities: list[str] = setting(help="files of other modalities are reported as not_ultrasound; [] accepts any",
                                    factory=lambda: ["US"])
    min_frames: int = setting(2, "fewer frames: single_frame (one-frame ultrasound images are kept as stills)")
    validate_decode: bool = setting(True, "decode the last frame of every loop (catches truncated files, missing "
                                          "codecs)")
    estimate_sector: bool = setting(True, "no SequenceOfUltrasoundRegions: find the sector from pixels that vary "
                                          "over time")
    sector_frames: int = setting(8, "frames decoded for that estimate")
    max_pixel_mb: int = setting(2048, "largest decoded pixel data (frames × rows × columns × samples × bytes, MiB) "
                                      "a file may declare or a deflated file inflate to; larger: too_large")
    follow_symlinks: bool = setting(False, "true: read links under the DICOM root that lead outside it (else each "
                                           "is an outside_root error)")
    resume: bool = setting(True, "reuse results for unchanged files from the previous run")
    retry_interrupted: bool = setting(False, "true: read again the files an earlier run stopped in (killed, out of "
                                             "memory); else each is an interrupted error")
    overwrite: bool = setting(False, "true: rewrite an earlier ingest in OUT made with other settings (only a folder "
                                     "medvid ingest wrote); false: such a rerun is refused")
    progress: bool = setting(True, "show a progress bar")


def scan_fingerprint(cfg: IngestSettings, salt: str) -> str:
    """Fingerprint of everything a cached per-file result depends on (``ScanCache``); one for both layouts, which
    share the key folder."""
    # result format: 2 deny terms, 3 SR, 4 accession, 5 regions, 6 cycle, 7 SR item by item, 8 stills and indexes,
    # 9 identities
    return ScanCache.fingerprint(salt, SCRUBBER_VERSION, ",".join(cfg.modalities), cfg.min_frames,
                                 cfg.validate_decode, cfg.estimate_sector, cfg.sector_frames, cfg.max_pixel_mb, 9)


# errors.jsonl ``detail`` of a file an earlier run stopped in (``ScanCache``).
INTERRUPTED = "an earlier run stopped while reading this file; retry_interrupted=true reads it again"


def open_scan_cache(folder: IngestFolder, cfg: IngestSettings, salt: str) -> ScanCache:
    """The resume cache of an ingest into ``folder`` with these settings."""
    return ScanCache(folder.scan_cache, scan_fingerprint(cfg, salt), cfg.resume, cfg.retry_interrupted)
