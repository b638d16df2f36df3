"""A folder of echo videos with its table (the EchoNet-Dynamic layout) → an ingest folder.

``medvid.ingest.ingest`` calls it when ``ROOT/FileList.csv`` exists; it writes the same contract as a
DICOM ingest (through ``medvid.io.ingest_folder.IngestFolder``) so datasets, pretraining and drafting work
unchanged:

- ``DIR/videos.parquet``: one row per readable video listed in ``FileList.csv``, keyed by pseudonyms
  of its ``FileName`` (``study_key``, ``video_key``; each video is its own study), with frames, fps,
  size, the sector box from moving pixels, the lower-cased split and the ED/ES frames of
  ``VolumeTracings.csv`` (``ed_frame``, ``es_frame``; blank when untraced);
- ``DIR/labels.csv``: ``study_key`` + ``ef``, ``esv``, ``edv`` from ``FileList.csv`` (plus the columns of
  ``labels=`` when given, keyed by ``FileName``); ``DIR/reports.csv`` when ``reports=`` is given;
- ``DIR/errors.jsonl``: per file, every disagreement between table and file, with numbers
  (``missing_video``, ``table_mismatch`` (kept: the file's own values are used), ``not_in_filelist``,
  ``tracing``, ``decode_error``);
- ``DIR/LOCAL_KEYS_DO_NOT_SHARE/paths.jsonl``: file key → relative path (the only place names are kept).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.ingest.settings import INTERRUPTED, IngestSettings, open_scan_cache
from medvid.io.dicom import scrub
from medvid.io.echo_videos import (FILELIST, PHENOTYPES, TRACINGS, VIDEO_DIR, file_stem, find_video,
                                   inspect_video, read_filelist, read_volume_tracings, table_mismatches)
from medvid.io.ingest_folder import LABELS, REPORTS, IngestFolder
from medvid.io.reports import read_labels, read_reports
from medvid.io.video import VIDEO_EXTS
from medvid.report.scrub import scrub_reports
from medvid.utils import progress, pseudonym

log = logging.getLogger("medvid")


def ingest_echonet(cfg: IngestSettings) -> dict:
    """Ingest ``cfg.dicom_root`` in the EchoNet-Dynamic layout into ``cfg.out`` (see the module docstring)."""
    root, folder = Path(cfg.dicom_root), IngestFolder(cfg.out, cfg.keys_dir or None)
    if cfg.views:
        raise MedvidError("views= applies to DICOM exports (keyed by SOPInstanceUID), not to a video folder")
    table = read_filelist(root / FILELIST)  # validated before any file is opened
    tracings, tracing_problems = ({}, {}) if not (root / TRACINGS).is_file() else read_volume_tracings(root / TRACINGS)
    folder.open_keys()
    salt = folder.salt(cfg.salt)
    video_dir = root / VIDEO_DIR
    videos: list[dict] = []
    errors: list[dict] = []
    paths: list[dict] = []
    with open_scan_cache(folder, cfg, salt) as cache:
        for row in progress(table.itertuples(index=False), total=len(table), desc="ingest videos", unit="video",
                        enabled=cfg.progress):
            path = find_video(video_dir, row.name)
            rel = (path.relative_to(root) if path else Path(VIDEO_DIR) / f"{row.name}.avi").as_posix()
            file_key = pseudonym(rel, salt, prefix="f_")
            video_key = pseudonym(row.name, salt, prefix="vi_")
            if path is None:
                errors.append({"file_key": file_key, "reason": "missing_video", "kept": False,
                               "detail": f"listed in {FILELIST} (row {len(paths) + 1}) but no file in {VIDEO_DIR}/"})
                paths.append({"file_key": file_key, "path": rel, "video_key": None})
                continue
            meta = cache.result(rel, path, lambda: _inspect(path, cfg.sector_frames),
                                lambda: {"error": INTERRUPTED, "reason": "interrupted"})
            if "error" in meta:
                errors.append({"file_key": file_key, "reason": meta.get("reason", "decode_error"), "kept": False,
                               "detail": meta["error"]})
                paths.append({"file_key": file_key, "path": rel, "video_key": None})
                continue
            series = pd.Series(row._asdict())
            mismatch = table_mismatches(meta, series)
            if mismatch:
                errors.append({"file_key": file_key, "reason": "table_mismatch", "kept": True,
                               "detail": "; ".join(mismatch)})
            trace = tracings.get(row.name)
            if row.name in tracing_problems:
                errors.append({"file_key": file_key, "reason": "tracing", "kept": True,
                               "detail": tracing_problems[row.name]})
            elif trace is not None and max(trace.ed_frame, trace.es_frame) >= meta["frames"]:
                errors.append({"file_key": file_key, "reason": "tracing", "kept": True,
                               "detail": f"traced frame {max(trace.ed_frame, trace.es_frame)} beyond the file's "
                                         f"{meta['frames']} frames"})
                trace = None
            videos.append({"study_key": pseudonym(row.name, salt, prefix="st_"), "video_key": video_key,
                           "instance_key": video_key, "series_key": "", "patient_key": "", "file_key": file_key,
                           "view": "", "split": row.split, **meta,
                           "ed_frame": trace.ed_frame if trace else None, "es_frame": trace.es_frame if trace else None,
                           **({"path": rel} if cfg.keep_paths else {})})
            paths.append({"file_key": file_key, "path": rel, "video_key": video_key})
    listed = {p["path"] for p in paths}
    for path in sorted(p for p in video_dir.glob("*") if p.suffix.lower() in VIDEO_EXTS) if video_dir.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            file_key = pseudonym(rel, salt, prefix="f_")
            errors.append({"file_key": file_key, "reason": "not_in_filelist", "kept": False,
                           "detail": f"video file without a {FILELIST} row"})
            paths.append({"file_key": file_key, "path": rel, "video_key": None})
    if cfg.keep_paths:
        rel_of = {p["file_key"]: p["path"] for p in paths}
        for e in errors:
            e["path"] = rel_of[e["file_key"]]
    folder.write_paths(paths)
    summary = _write_tables(folder, cfg, salt, table, videos)
    folder.write_videos(videos)
    folder.write_errors(errors)
    summary.update({"out": str(folder.root), "layout": "echonet", "files": len(table), "videos": len(videos),
                    "studies": len(videos), "frames": int(sum(v["frames"] for v in videos)), "errors": len(errors),
                    "errors_by_reason": dict(Counter(e["reason"] for e in errors)), "reused_from_cache": cache.reused,
                    "traced": int(sum(v["ed_frame"] is not None for v in videos))})
    log.info("ingest (video folder): %d listed → %d videos, %d errors %s", len(table), len(videos), len(errors),
             summary["errors_by_reason"])
    if not videos:
        raise MedvidError(f"no usable video among {len(table)} listed in {root / FILELIST}; see {folder.errors}")
    return summary


def _inspect(path: Path, sector_frames: int) -> dict[str, Any]:
    """``inspect_video``'s metadata, or ``{"error": detail}`` without the file's name (errors.jsonl is shareable)."""
    try:
        return inspect_video(path, sector_frames)
    except MedvidError as exc:
        return {"error": scrub(exc, path)}


def _write_tables(folder: IngestFolder, cfg: IngestSettings, salt: str, table: pd.DataFrame,
                  videos: list[dict]) -> dict[str, Any]:
    """labels.csv from FileList (+ ``cfg.labels``), reports.csv from ``cfg.reports``; keyed by study pseudonyms."""
    labels = table[["name", *PHENOTYPES]].copy()
    summary: dict[str, Any] = {}
    if cfg.labels:
        extra = read_labels(cfg.labels).rename(columns={"study_uid": "name"})
        extra["name"] = extra["name"].map(file_stem)
        labels = labels.merge(extra.drop(columns=[c for c in PHENOTYPES if c in extra]), on="name", how="outer")
    labels.insert(0, "study_key", [pseudonym(n, salt, prefix="st_") for n in labels.pop("name")])
    labels = labels.dropna(axis=1, how="all")
    folder.write_table(LABELS, labels)
    keys = {v["study_key"] for v in videos}
    summary["labels_matched"] = int(sum(k in keys for k in labels["study_key"]))
    if cfg.reports:
        df = read_reports(cfg.reports)
        df.insert(0, "study_key", [pseudonym(file_stem(u), salt, prefix="st_")
                                   for u in df.pop("study_uid")])
        summary["reports_scrubbed"] = scrub_reports(df)  # pattern rules: video files carry no header to deny
        folder.write_table(REPORTS, df)
        summary["reports_matched"] = int(df["study_key"].isin(keys).sum())
    summary["splits"] = dict(Counter(v["split"] or "none" for v in videos))
    summary["ef_mean"] = float(np.nanmean(table["ef"])) if table["ef"].notna().any() else None
    return summary
