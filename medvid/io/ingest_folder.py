"""The ingest folder: the one place that knows what ``medvid ingest`` writes where, and how to read it back.

``OUT`` (shareable: pseudonymous keys only) holds ``videos.parquet`` (one row per loop), ``errors.jsonl``,
the companion tables re-keyed to pseudonyms (``reports.csv``, ``labels.csv``, ``views.csv``,
``measurements.csv``) and ``ingest_manifest.json`` (digests of the companion tables this ingest wrote).
The key folder, ``OUT/LOCAL_KEYS_DO_NOT_SHARE/`` or ``keys_dir`` / ``$MEDVID_KEYS_DIR`` outside ``OUT``,
holds what links pseudonyms back to source files: ``paths.jsonl`` (file key → relative path),
``identities.jsonl`` (per study key its DICOM identifiers and the UIDs of its loops, read only by
``medvid pacs push`` at send time), the salt and the resume cache (``scan_cache.jsonl``); folder 0700, files 0600.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from medvid.errors import MedvidError
from medvid.utils import atomic_path, atomic_write_text, open_private, private_dir, read_jsonl, write_jsonl

log = logging.getLogger("medvid")

KEY_DIR = "LOCAL_KEYS_DO_NOT_SHARE"  # folder inside OUT that alone links pseudonyms back to source files
KEYS_ENV = "MEDVID_KEYS_DIR"  # a key folder kept outside OUT, for readers that are not told ``keys_dir``
VIDEOS, ERRORS, MANIFEST = "videos.parquet", "errors.jsonl", "ingest_manifest.json"
REPORTS, LABELS, VIEWS, MEASUREMENTS = "reports.csv", "labels.csv", "views.csv", "measurements.csv"
STILLS = "stills.csv"  # single-frame ultrasound stills (Doppler, M-mode, 2-D) with their calibrated regions
PATHS, SALT, SCAN_CACHE, KEY_README = "paths.jsonl", "salt.txt", "scan_cache.jsonl", "README.txt"
IDENTITIES = "identities.jsonl"  # key folder: what re-identifies a study for sending its report to the PACS
TABLES = (REPORTS, LABELS, VIEWS, MEASUREMENTS, STILLS)  # the companion tables: the only names write_table and the manifest use

# videos.parquet: these columns first, the rest sorted by name.
FIRST_COLUMNS = ["study_key", "video_key", "instance_key", "series_key", "patient_key", "file_key", "view", "split",
                 "frames", "fps"]

_KEY_TEXT = ("This folder links pseudonyms back to source files (relative paths can name patients) and holds "
             "the pseudonym salt. Keep it on the machine that holds the DICOM export; never share or upload it.\n")


@dataclass(frozen=True)
class IngestFolder:
    """An ingest output folder ``root`` and its key folder (``keys_dir``, else ``$MEDVID_KEYS_DIR``, else
    ``root/LOCAL_KEYS_DO_NOT_SHARE``)."""

    root: str | os.PathLike
    keys_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "keys_dir", Path(self.keys_dir) if self.keys_dir else None)

    # ------------------------------------------------------------------ where things are

    @property
    def videos(self) -> Path:
        return self.root / VIDEOS

    @property
    def errors(self) -> Path:
        return self.root / ERRORS

    @property
    def reports(self) -> Path:
        return self.root / REPORTS

    @property
    def labels(self) -> Path:
        return self.root / LABELS

    @property
    def views(self) -> Path:
        return self.root / VIEWS

    @property
    def measurements(self) -> Path:
        return self.root / MEASUREMENTS

    @property
    def keys(self) -> Path:
        """The key folder: ``keys_dir`` when given (or ``$MEDVID_KEYS_DIR``), kept outside the ingest so that the
        ingest folder alone is shareable; else ``root/LOCAL_KEYS_DO_NOT_SHARE``."""
        keys = self.keys_dir or os.environ.get(KEYS_ENV)
        return Path(keys) if keys else self.root / KEY_DIR

    @property
    def paths_file(self) -> Path:
        return self.keys / PATHS

    @property
    def identities_file(self) -> Path:
        return self.keys / IDENTITIES

    @property
    def scan_cache(self) -> Path:
        return self.keys / SCAN_CACHE

    def exists(self) -> bool:
        """True when ``root`` holds an ingest (its ``videos.parquet``)."""
        return self.videos.is_file()

    # ------------------------------------------------------------------ reading

    def read_videos(self) -> pd.DataFrame:
        """``videos.parquet`` with ``view`` and ``split`` as strings (blank when unknown)."""
        if not self.videos.exists():
            raise MedvidError(f"{self.videos}: missing; run `medvid ingest DICOM_ROOT --out {self.root}` first")
        df = pd.read_parquet(self.videos)
        for col in ("view", "split"):
            if col not in df:
                df[col] = ""
            df[col] = df[col].fillna("").astype(str)
        return df

    def read_reports(self) -> pd.DataFrame:
        """The pseudonymised ``reports.csv`` (``study_key,report,split``, strings); empty when absent."""
        if not self.reports.exists():
            return pd.DataFrame({"study_key": [], "report": [], "split": []})
        df = pd.read_csv(self.reports, dtype=str, keep_default_na=False)
        if "split" not in df:
            df["split"] = ""
        return df

    def video_paths(self) -> dict[str, str]:
        """``video_key → path relative to the source root``, from the key folder's ``paths.jsonl``."""
        if not self.paths_file.exists():
            raise MedvidError(f"{self.paths_file}: missing (the local key file written by `medvid ingest`)")
        return {r["video_key"]: r["path"] for r in read_jsonl(self.paths_file) if r.get("video_key")}

    def identities(self) -> dict[str, dict[str, Any]]:
        """``study_key → {"study": {DICOM keyword: value}, "instances": {video_key: {keyword: value}}}`` from the
        key folder (private; the identifiers a report needs when it is sent to the hospital's own PACS)."""
        if not self.identities_file.exists():
            raise MedvidError(f"{self.identities_file}: missing; it is written by `medvid ingest` since version 8 of "
                              "its scan results (run the ingest again into the same folder)")
        return {r["study_key"]: r for r in read_jsonl(self.identities_file) if r.get("study_key")}

    # ------------------------------------------------------------------ writing (medvid ingest)

    def open_keys(self) -> Path:
        """Create the key folder, private (0700; files 0600), with its README; return it."""
        keys = private_dir(self.keys)
        atomic_write_text(keys / KEY_README, _KEY_TEXT, private=True)
        return keys

    def salt(self, given: str = "") -> str:
        """``given``, else the salt kept in the key folder, else a new one generated and kept there."""
        if given:
            return given
        path = self.keys / SALT
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        salt = secrets.token_hex(16)
        atomic_write_text(path, salt + "\n", private=True)
        return salt

    def write_paths(self, rows: Iterable[dict[str, Any]]) -> None:
        """``paths.jsonl`` rows ``{file_key, path, video_key}`` (the only place source paths are kept)."""
        write_jsonl(self.paths_file, rows, private=True)

    def write_identities(self, rows: Iterable[dict[str, Any]]) -> None:
        """``identities.jsonl`` rows ``{study_key, study, instances}`` (private, in the key folder only)."""
        write_jsonl(self.identities_file, rows, private=True)

    def write_videos(self, videos: Sequence[dict[str, Any]]) -> None:
        """``videos.parquet``: ``FIRST_COLUMNS``, then the other keys of the rows sorted by name."""
        rest = sorted({k for v in videos for k in v} - set(FIRST_COLUMNS)) if videos else []
        with atomic_path(self.videos) as tmp:
            pd.DataFrame(list(videos), columns=FIRST_COLUMNS + rest).to_parquet(tmp, index=False)

    def write_errors(self, errors: Iterable[dict[str, Any]]) -> None:
        write_jsonl(self.errors, errors)

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """A companion table (``reports.csv`` …) in ``root``, atomically."""
        if name not in TABLES:
            raise ValueError(f"not an ingest table: {name!r}")
        with atomic_path(self.root / name) as tmp:
            df.to_csv(tmp, index=False)

    def retire_stale_tables(self, written: Sequence[str]) -> None:
        """Remove companion tables an earlier ingest into ``root`` wrote and this one did not (they would
        describe other data), but only files still byte-identical to what that ingest wrote (``MANIFEST``):
        anything else is not provably ours and is left with a warning. Then record ``written``."""
        manifest = self.root / MANIFEST
        try:
            old = json.loads(manifest.read_text(encoding="utf-8")).get("tables", {}) if manifest.exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        for name, digest in old.items():
            if name not in TABLES:  # a manifest naming anything else (``../x``, an absolute path) was not written by us
                log.warning("ingest: %s names %r, not an ingest table; ignored", MANIFEST, name)
                continue
            path = self.root / name
            if name in written or not path.is_file():
                continue
            if _sha256(path) == digest:
                path.unlink()
                log.info("ingest: removed %s left by an earlier run (not given this time)", name)
            else:
                log.warning("ingest: %s is not from this run and was changed since it was written; left in place", name)
        atomic_write_text(manifest, json.dumps({"tables": {n: _sha256(self.root / n) for n in written}}, indent=1))


def split_rows(df: pd.DataFrame, split: str, where: str | os.PathLike) -> pd.DataFrame:
    """The rows of ``df`` (videos or reports of the ingest ``where``) in ``split``; blank or ``all`` = all. A split the
    table does not hold is refused, naming the ones it does (a typo must fail before any work, not draw nothing)."""
    if not split or split == "all":
        return df
    held = sorted(set(df["split"]) - {""})
    if split not in held:
        raise MedvidError(f"split={split!r}: {where} has no such split; it holds "
                          + (", ".join(held) if held else "none (its reports CSV had no split column)")
                          + " (split='' takes every study)")
    return df[df["split"] == split]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ScanCache:
    """The resume cache of an ingest (``scan_cache.jsonl`` in the key folder): per source file, its size and
    modification time and the result of inspecting it, valid for one ``settings`` fingerprint.

    Lines are appended and flushed one by one, so a killed run resumes where it stopped. Before a file is read,
    a line marks it in progress; a file still marked when a run died (killed, out of memory) is not read again
    by the next runs (whatever their settings) unless ``retry_interrupted``: one hostile file cannot make every
    rerun die on it.
    """

    def __init__(self, path: Path, settings: str, resume: bool = True, retry_interrupted: bool = False) -> None:
        self.path, self.settings, self.resume, self.retry_interrupted = path, settings, resume, retry_interrupted
        self.hits, self.in_progress = self._load() if resume else ({}, {})
        self.reused = 0

    @staticmethod
    def fingerprint(*parts: Any) -> str:
        """Fingerprint of everything a cached result depends on (salt, settings, result format version)."""
        return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:16]

    def _load(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
        """Results of this fingerprint by ``rel``, and the stamps of files left in progress by any run."""
        cache: dict[str, dict[str, Any]] = {}
        in_progress: dict[str, list[int]] = {}
        if not self.path.exists():
            return cache, in_progress
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if row.get("in_progress"):
                    in_progress[row["rel"]] = row["stamp"]
                    continue
                in_progress.pop(row["rel"], None)
                if row.get("settings") == self.settings:
                    cache[row["rel"]] = row
        return cache, in_progress

    def __enter__(self) -> "ScanCache":
        self._file = open_private(self.path, "a" if self.resume else "w")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def result(self, rel: str, path: Path, compute: Callable[[], Any], interrupted: Callable[[], Any]) -> Any:
        """The result for ``rel``: cached when ``path`` has not changed since (counted in ``reused``);
        ``interrupted()`` when an earlier run stopped while reading this unchanged file (not cached: the mark
        stays until a retry); else ``compute()``, marked in progress while it runs, then cached."""
        stamp = _stamp(path)
        hit = self.hits.get(rel)
        if hit is not None and hit["stamp"] == stamp:
            self.reused += 1
            return hit["result"]
        if not self.retry_interrupted and self.in_progress.get(rel) == stamp:
            return interrupted()
        self._write({"rel": rel, "stamp": stamp, "in_progress": True})
        result = compute()
        self._write({"rel": rel, "stamp": stamp, "settings": self.settings, "result": result})
        return result

    def _write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]

