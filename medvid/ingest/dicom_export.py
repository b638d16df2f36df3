"""A DICOM export → an ingest folder (``medvid ingest DICOM_ROOT --out DIR``).

Writes (all atomically, through ``medvid.io.ingest_folder.IngestFolder``):
- ``DIR/videos.parquet``: one row per cine loop, keyed by pseudonyms (no identifiers, no paths);
- ``DIR/stills.csv``: one row per single-frame ultrasound still (Doppler / M-mode strips, 2-D screenshots) with
  its typed, calibrated regions, keyed like loops (``instance_key`` is what a measurement's ``image_key`` names);
  stills never enter ``videos.parquet`` (they are not clips);
- ``DIR/errors.jsonl``: one row per file that is neither a loop, a still, a measurement SR nor an index
  (``file_key``, typed ``reason``, PHI-free ``detail``);
- ``DIR/reports.csv`` / ``labels.csv`` / ``views.csv`` when given: the companion tables re-keyed
  from real UIDs to pseudonyms, report text scrubbed of PHI (``medvid.report.scrub``: pattern rules plus each
  study's own DICOM identifiers; ``reports_scrubbed`` in the summary counts placeholders per type);
- ``DIR/measurements.csv``: the numeric measurements of vendor SRs (TID 5200 / 5300) in the export;
  ``labels.csv`` is derived from them through ``configs/sr_measurements.yaml`` (a given labels CSV wins
  per column);
- ``DIR/LOCAL_KEYS_DO_NOT_SHARE/`` (or ``keys_dir``, outside ``DIR``): ``paths.jsonl`` (file key →
  relative path, to reopen files and find bad ones), ``identities.jsonl`` (each study's DICOM identifiers, for
  sending its report back to the PACS), the generated salt, the resume cache. The only
  place a path is kept; folder 0700, files 0600. With ``keys_dir`` set, ``DIR`` alone is shareable
  (readers find the keys through ``keys_dir`` / ``$MEDVID_KEYS_DIR``).

Files are inspected from their headers and one decoded frame; a re-run reuses results for files
whose size and modification time did not change (resume after a kill). A DICOMDIR is read as an index of
the folder it lies in (``medvid.io.dicom.read_dicomdir``): the files it lists are ingested with the ones a scan
finds (a listed file the scan misses is still read), a listed file that is not there is a ``missing_file`` error,
a listed path that leads outside the root an ``outside_root`` error, and the DICOMDIR itself counts as an index,
not as an error.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.ingest.settings import INTERRUPTED, IngestSettings, open_scan_cache
from medvid.io.dicom import (DicomFileError, accession_key, cine_metadata, identity, inspect_file, is_dicomdir_name,
                             is_still, quiet_pydicom, read_dicomdir, scan_root, still_metadata)
from medvid.io.echo_sr import SRReading, current_measurements, derive_labels, load_rules, read_measurements
from medvid.io.ingest_folder import LABELS, MEASUREMENTS, REPORTS, STILLS, VIEWS, IngestFolder
from medvid.io.regions import box_from_mask, box_from_regions, estimate_sector_mask
from medvid.io.reports import read_labels, read_reports, read_views
from medvid.report.scrub import deny_terms, scrub_reports
from medvid.utils import progress, pseudonym

log = logging.getLogger("medvid")

_LINK_OUT = "symbolic link leading outside the DICOM root: not read (follow_symlinks=true reads it)"
_LISTED_OUT = "DICOMDIR lists a path leading outside the DICOM root: not read"
_LISTED_MISSING = "listed in the DICOMDIR, not in the export"
# Leading columns of stills.csv (the rest sorted by name).
STILL_COLUMNS = ["study_key", "still_key", "instance_key", "series_key", "patient_key", "file_key", "still_type",
                 "calibrated", "rows", "cols"]


def ingest_dicom(cfg: IngestSettings) -> dict:
    """Ingest the DICOM export ``cfg.dicom_root`` into ``cfg.out`` (see the module docstring); the summary."""
    root, folder = Path(cfg.dicom_root), IngestFolder(cfg.out, cfg.keys_dir or None)
    folder.open_keys()
    salt = folder.salt(cfg.salt)
    files, links_out = scan_root(root, cfg.follow_symlinks)
    results = [_error(path.relative_to(root).as_posix(), salt, "outside_root", _LINK_OUT) for path in links_out]
    files, listed, counts = _with_dicomdir_files(root, files, cfg, salt, results)
    with open_scan_cache(folder, cfg, salt) as cache, \
            progress(files, desc="ingest", unit="file", enabled=cfg.progress) as bar:
        for path in bar:
            rel = path.relative_to(root).as_posix()
            results.append(result := cache.result(rel, path, lambda: _process(path, rel, cfg, salt),
                                                  lambda: _error(rel, salt, "interrupted", INTERRUPTED)))
            if counts is not None and path not in listed and "index" not in result:
                counts["not_listed"] += 1
    videos, stills, errors = _assemble(results)
    summary = _write_outputs(folder, cfg, salt, videos, stills, errors, results)
    summary.update({"files": len(results), "reused_from_cache": cache.reused})
    summary["index_files"] = sum("index" in r for r in results)
    if counts is not None:
        summary["dicomdir"] = counts
    log.info("ingest: %d files → %d cine loops in %d studies, %d stills, %d errors %s", len(files), summary["videos"],
             summary["studies"], len(stills), len(errors), dict(summary["errors_by_reason"]))
    if not videos:
        raise MedvidError(f"no usable cine loop among {len(files)} file(s); see {folder.errors}")
    return summary


def _with_dicomdir_files(root: Path, files: list[Path], cfg: IngestSettings, salt: str,
                         results: list[dict]) -> tuple[list[Path], set[Path], dict[str, int] | None]:
    """The scanned files plus those the DICOMDIRs among them list that the scan missed, the listed files found,
    and the counts (None without a DICOMDIR): ``listed``, ``listed_found``, ``missing``, ``outside_root`` and
    ``not_listed`` (0 here: the caller counts the files no index names that are not indexes themselves). Listed
    files that are missing or lead outside the root become error results."""
    indexes = [(p, idx) for p in files if is_dicomdir_name(p)
               and (idx := read_dicomdir(p, root, cfg.follow_symlinks, cfg.max_pixel_mb << 20)) is not None]
    if not indexes:
        return files, set(), None
    known = set(files)
    listed: dict[Path, None] = {}
    missing = outside = 0
    for path, idx in indexes:
        listed.update(dict.fromkeys(idx.files))
        here = path.parent.relative_to(root)
        results.extend(_error((here / rel).as_posix(), salt, "missing_file", _LISTED_MISSING) for rel in idx.missing)
        results.extend(_error((here / rel).as_posix(), salt, "outside_root", _LISTED_OUT) for rel in idx.outside)
        missing, outside = missing + len(idx.missing), outside + len(idx.outside)
    counts = {"listed": len(listed) + missing + outside, "listed_found": len(listed), "missing": missing,
              "outside_root": outside, "not_listed": 0}
    return files + [p for p in listed if p not in known], set(listed), counts


def _error(rel: str, salt: str, reason: str, detail: str) -> dict[str, Any]:
    """The result of a file that is not read: ``{"rel", "file_key", "error": {reason, detail}}``."""
    return {"rel": rel, "file_key": pseudonym(rel, salt, prefix="f_"), "error": {"reason": reason, "detail": detail}}


def _process(path: Path, rel: str, cfg: IngestSettings, salt: str) -> dict[str, Any]:
    """One file → ``{"rel", "file_key", "video": row}`` or ``{"rel", "file_key", "error": {reason, detail}}``."""
    file_key = pseudonym(rel, salt, prefix="f_")
    base = {"rel": rel, "file_key": file_key}
    try:
        cine = inspect_file(path, modalities=cfg.modalities, min_frames=cfg.min_frames, validate=cfg.validate_decode,
                            max_bytes=cfg.max_pixel_mb << 20, stills=True)
        if is_still(cine, cfg.min_frames):
            return {**base, "still": _still_row(cine, salt, file_key), "deny": deny_terms(cine.ds)}
        row = cine_metadata(cine, salt)
        with quiet_pydicom():
            box = box_from_regions(cine.ds, cine.rows, cine.cols)
        source = "regions" if box else "none"
        if box is None and cfg.estimate_sector:
            idx = np.unique(np.linspace(0, cine.n_frames - 1, min(cfg.sector_frames, cine.n_frames)).astype(int))
            box = box_from_mask(m) if (m := estimate_sector_mask(cine.frames(idx))) is not None else None
            source = "pixels" if box else "none"
        # no_sector: nothing locates the image, so datasets cannot blank burned-in text (they skip the loop).
        row.update({"file_key": file_key, "sector_box": list(box) if box else None, "sector_source": source,
                    "no_sector": source == "none"})
        # The study's own identifiers, to scrub its report and to send its report back to the PACS; cached in the
        # private key folder only.
        return {**base, "video": row, "deny": deny_terms(cine.ds), "identity": identity(cine.ds)}
    except DicomFileError as exc:
        if exc.reason == "dicomdir":  # an index of the export, not a failed file
            return {**base, "index": "dicomdir"}
        if exc.reason == "structured_report" and (reading := _sr_measurements(path, salt)).rows:
            return {**base, "measurements": reading.rows, "sr_skipped": reading.skipped}
        log.debug("file %s: %s", file_key, exc.reason)
        return {**base, "error": {"reason": exc.reason, "detail": exc.detail}}
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        log.debug("file %s: decode_error (%s)", file_key, type(exc).__name__)
        return {**base, "error": {"reason": "decode_error", "detail": f"{type(exc).__name__} while reading"}}


def _still_row(cine, salt: str, file_key: str) -> dict[str, Any]:
    """``still_metadata`` plus the file key and the box of its image regions (``sector_box``, JSON ``[x0, y0, x1,
    y1]``; blank without regions: nothing locates the image, so it is not rendered)."""
    row = still_metadata(cine, salt)
    with quiet_pydicom():
        box = box_from_regions(cine.ds, cine.rows, cine.cols)
    row.update({"file_key": file_key, "sector_box": json.dumps(list(box)) if box else ""})
    return row


def _sr_measurements(path: Path, salt: str) -> SRReading:
    """Numeric measurements of a structured report, read item by item; none when it has no content tree."""
    try:
        with quiet_pydicom():
            return read_measurements(path, salt)
    except Exception as exc:  # noqa: BLE001 - a damaged SR stays a typed structured_report error
        log.debug("structured report unreadable (%s)", type(exc).__name__)
        return SRReading()


def _assemble(results: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Split results into video rows, still rows and error rows.

    A file repeating a seen SOPInstanceUID with the same frames, size and transfer syntax is a
    ``duplicate`` copy. One that re-encodes it differently (another codec or geometry, as in
    pydicom's test files) stays a row: ``instance_key`` is shared, ``video_key`` (``still_key``) gets a suffix.
    """
    rows: dict[str, list[dict]] = {"video": [], "still": []}
    errors = []
    seen: dict[str, list[tuple]] = {}
    for r in results:
        if "error" in r:
            errors.append({"file_key": r["file_key"], **r["error"]})
            continue
        kind = "video" if "video" in r else "still" if "still" in r else None
        if kind is None:  # a measurement SR (its rows go to measurements.csv) or a DICOMDIR index
            continue
        row, key = dict(r[kind]), f"{kind}_key"
        base = row[key]
        signature = (row.get("frames", 1), row["rows"], row["cols"], row["transfer_syntax"])
        variants = seen.setdefault(base, [])
        if signature in variants:
            errors.append({"file_key": r["file_key"], "reason": "duplicate",
                           "detail": "same SOPInstanceUID, frames, size and transfer syntax as another file"})
            continue
        row["instance_key"] = base
        if variants:
            row[key] = f"{base}-{len(variants) + 1}"
        variants.append(signature)
        rows[kind].append(row)
    return rows["video"], rows["still"], errors


def _write_outputs(folder: IngestFolder, cfg: IngestSettings, salt: str, videos: list[dict], stills: list[dict],
                   errors: list[dict], results: list[dict]) -> dict[str, Any]:
    rel_of = {r["file_key"]: r["rel"] for r in results}
    video_of = {v["file_key"]: v["video_key"] for v in videos}
    folder.write_paths({"file_key": k, "path": rel, "video_key": video_of.get(k)} for k, rel in rel_of.items())
    folder.write_identities(_identities(videos, results))
    summary: dict[str, Any] = {"out": str(folder.root)}
    views = splits = None
    if cfg.views:
        df = read_views(cfg.views)
        views = {pseudonym(u, salt, prefix="vi_"): v for u, v in zip(df["sop_instance_uid"], df["view"])}
        rows = [(v["video_key"], views[v["instance_key"]]) for v in videos if v["instance_key"] in views]
        matched = {v["instance_key"] for v in videos}
        rows += [(k, view) for k, view in views.items() if k not in matched]  # kept: a later ingest may hold them
        folder.write_table(VIEWS, pd.DataFrame(rows, columns=["video_key", "view"]))
        summary["views_matched"] = sum(v["instance_key"] in views for v in videos)
        unmatched = [i + 1 for i, k in enumerate(views) if k not in matched]
        summary["views_unmatched"] = {"rows": len(unmatched), "row_numbers": unmatched[:50]}
    if cfg.reports:
        df = _to_study_keys(read_reports(cfg.reports, key=_join_key(cfg.reports)), salt, videos, "reports", summary)
        summary["reports_scrubbed"] = _scrub_reports(df, results)
        folder.write_table(REPORTS, df)
        splits = dict(zip(df["study_key"], df["split"]))
    measurements = current_measurements(m for r in results for m in r.get("measurements", ()))
    labels = None
    if len(measurements):
        folder.write_table(MEASUREMENTS, measurements)
        refused: Counter[str] = Counter()
        derived = derive_labels(measurements, load_rules(cfg.sr_measurements or None), refused)
        summary["measurement_files"] = sum("measurements" in r for r in results)
        summary["measurements_per_study"] = {k: int(n) for k, n in measurements.groupby("study_key").size().items()}
        summary["measurements_replaced"] = int(measurements["replaced"].sum())
        summary["measurement_items_skipped"] = dict(sum((Counter(r.get("sr_skipped", {})) for r in results),
                                                        Counter()))
        summary["measurement_units_refused"] = dict(refused)
        summary["labels_from_measurements"] = [c for c in derived.columns if c != "study_key"]
        labels = derived if summary["labels_from_measurements"] else None
    if cfg.labels:
        df = _to_study_keys(read_labels(cfg.labels, key=_join_key(cfg.labels)), salt, videos, "labels", summary)
        if labels is not None:  # a given labels CSV wins per column; measured phenotypes fill the others
            df = df.merge(labels[["study_key", *[c for c in labels.columns if c not in df.columns]]],
                          on="study_key", how="outer")
        labels = df
    if labels is not None:
        folder.write_table(LABELS, labels)
        if not cfg.labels:
            summary["labels_matched"] = len(set(labels["study_key"]) & {v["study_key"] for v in videos})
    for v in videos:
        v["view"] = (views or {}).get(v["instance_key"], "")
        v["split"] = (splits or {}).get(v["study_key"], "")
        if cfg.keep_paths:
            v["path"] = rel_of[v["file_key"]]
    if cfg.keep_paths:
        for e in (*errors, *stills):
            e["path"] = rel_of[e["file_key"]]
    folder.write_videos(videos)
    folder.write_errors(errors)
    if stills:
        rest = sorted({k for s in stills for k in s} - set(STILL_COLUMNS))
        folder.write_table(STILLS, pd.DataFrame(stills, columns=STILL_COLUMNS + rest))
    folder.retire_stale_tables([name for name, made in ((VIEWS, cfg.views), (REPORTS, cfg.reports),
                                                        (MEASUREMENTS, len(measurements)),
                                                        (LABELS, labels is not None), (STILLS, stills)) if made])
    summary.update({"videos": len(videos), "studies": len({v["study_key"] for v in videos}),
                    "frames": int(sum(v["frames"] for v in videos)), "errors": len(errors), "stills": len(stills),
                    "stills_by_type": dict(Counter(s["still_type"] for s in stills)),
                    "errors_by_reason": dict(Counter(e["reason"] for e in errors))})
    return summary


def _identities(videos: list[dict], results: list[dict]) -> list[dict[str, Any]]:
    """Per study key, its DICOM identifiers (from its first loop) and each loop's SOP class and instance UIDs."""
    of_file = {r["file_key"]: r["identity"] for r in results if "identity" in r}
    studies: dict[str, dict[str, Any]] = {}
    for v in videos:
        found = of_file.get(v["file_key"])
        if found:
            study = studies.setdefault(v["study_key"], {"study_key": v["study_key"], "study": found["study"],
                                                        "instances": {}})
            study["instances"][v["video_key"]] = found["instance"]
    return list(studies.values())


def _join_key(path: str) -> str:
    """``study_uid`` or, in tables keyed the way hospitals key them, ``accession``."""
    try:
        columns = set(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError):
        return "study_uid"  # the reader reports what is wrong with the file
    return "accession" if "accession" in columns and "study_uid" not in columns else "study_uid"


def _to_study_keys(df: pd.DataFrame, salt: str, videos: list[dict], table: str,
                   summary: dict[str, Any]) -> pd.DataFrame:
    """Re-key a companion table to ``study_key`` and record ``<table>_matched`` / ``<table>_unmatched``.

    ``study_uid`` rows are kept even when no loop matches (a later ingest may hold the study). An
    ``accession`` row is repeated for every study of that accession in the export (one accession can
    hold several studies); one that matches no study cannot be keyed and is left out. Unmatched rows
    are reported by 1-based data row number (never by value).
    """
    studies = {v["study_key"] for v in videos}
    if "study_uid" in df.columns:
        keys = [[pseudonym(u, salt, prefix="st_")] for u in df.pop("study_uid")]
        matched = [k[0] in studies for k in keys]
    else:
        by_accession: dict[str, set[str]] = {}
        for v in videos:
            if v.get("accession_key"):
                by_accession.setdefault(v["accession_key"], set()).add(v["study_key"])
        keys = [sorted(by_accession.get(accession_key(a, salt), ())) for a in df.pop("accession")]
        matched = [bool(k) for k in keys]
    df.insert(0, "study_key", [k or [None] for k in keys])
    df = df.explode("study_key").dropna(subset=["study_key"]).reset_index(drop=True)
    unmatched = [i + 1 for i, ok in enumerate(matched) if not ok]
    summary[f"{table}_matched"] = len(set(df["study_key"]) & studies)
    summary[f"{table}_unmatched"] = {"rows": len(unmatched), "row_numbers": unmatched[:50]}
    return df


def _scrub_reports(df: pd.DataFrame, results: list[dict]) -> dict[str, int]:
    """Scrub ``df["report"]`` in place with each study's own DICOM identifiers (from its files' headers) as a
    deny list on top of the pattern rules."""
    deny: dict[str, set[str]] = {}
    for r in results:
        if (row := r.get("video") or r.get("still")) is not None:
            deny.setdefault(row["study_key"], set()).update(r.get("deny", ()))
    return scrub_reports(df, deny)
