"""Data access for the review app: no Streamlit here, so every rule is testable on its own.

The app is started with data roots (``--data``). ``discover`` finds in them what the other jobs
wrote: ingest folders (``videos.parquet``), draft folders (``drafts.jsonl`` / ``errors.jsonl``,
see ``docs/drafting_contract.md``), zero-shot folders (``predictions/*.csv``) and Cholec80-layout
video roots (``videos/``); an ingest's ``measurements.csv`` is read one study at a time. Every file the app
opens goes through ``medvid.utils.resolve_under``: resolved, and refused unless it lies under a data root (``..``, absolute paths and symlinks out are refused).
The ingest folder's layout is ``medvid.io.ingest_folder.IngestFolder``; its key file (``paths.jsonl`` in
``LOCAL_KEYS_DO_NOT_SHARE/`` or ``keys_dir``) is read only to open the DICOM file of a loop, and only when the
app was given a DICOM root; its content is never shown.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from medvid.apps.access import LOOPBACK_NAMES
from medvid.errors import MedvidError, PathRefused
from medvid.io.ingest_folder import KEY_DIR, MEASUREMENTS, VIDEOS, IngestFolder
from medvid.io.video import VIDEO_EXTS
from medvid.report import worklist as worklist_rules
from medvid.utils import resolve_under, valid_key

ENV = "MEDVID_APP_CONFIG"  # JSON of AppConfig fields, set by `medvid app`
CACHE_DIR = "app_cache"
STATUSES = ("no draft", "draft", "edited", "signed off", "error")
_SKIP_DIRS = {KEY_DIR, CACHE_DIR, "reviewed", "predictions", "plots", "embeddings"}  # never hold outputs



@dataclass(frozen=True)
class AppConfig:
    """What the app serves: data roots, DICOM roots (for rendering loops) and the loop cache."""

    data: tuple[Path, ...] = ()
    dicom_roots: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    keys_dir: Path | None = None  # the ingest's key folder when it was kept outside the ingest (keys_dir=)
    hosts: tuple[str, ...] = LOOPBACK_NAMES  # Host / Origin names a browser may use (apps/access.py)
    pacs_url: str = ""  # where Send to PACS files signed reports (as `medvid pacs push URL`); blank: not offered
    pacs_credentials: str = ""  # its credentials file (blank: MEDVID_PACS_* from the environment)
    pacs_ingest: Path | None = None  # the ingest whose key folder re-identifies the reports (keys_dir applies)

    @property
    def roots(self) -> tuple[Path, ...]:
        """Every folder the app may read from (data roots and DICOM roots)."""
        return tuple(p.resolve() for p in (*self.data, *self.dicom_roots))

    @property
    def cache(self) -> Path | None:
        """Folder of rendered loops: ``cache_dir``, else ``<first data root>/app_cache``."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return self.data[0] / CACHE_DIR if self.data else None

    def to_json(self) -> str:
        return json.dumps({"data": [str(p) for p in self.data], "dicom_roots": [str(p) for p in self.dicom_roots],
                           "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                           "keys_dir": str(self.keys_dir) if self.keys_dir else None, "hosts": list(self.hosts),
                           "pacs_url": self.pacs_url, "pacs_credentials": self.pacs_credentials,
                           "pacs_ingest": str(self.pacs_ingest) if self.pacs_ingest else None})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "AppConfig":
        """The config `medvid app` passed in ``MEDVID_APP_CONFIG``; empty when unset."""
        raw = (environ if environ is not None else os.environ).get(ENV, "")
        if not raw:
            return cls()
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MedvidError(f"{ENV} is not valid JSON") from exc
        return cls(data=tuple(Path(p) for p in values.get("data") or []),
                   dicom_roots=tuple(Path(p) for p in values.get("dicom_roots") or []),
                   cache_dir=Path(values["cache_dir"]) if values.get("cache_dir") else None,
                   keys_dir=Path(values["keys_dir"]) if values.get("keys_dir") else None,
                   hosts=tuple(values.get("hosts") or LOOPBACK_NAMES), pacs_url=str(values.get("pacs_url") or ""),
                   pacs_credentials=str(values.get("pacs_credentials") or ""),
                   pacs_ingest=Path(values["pacs_ingest"]) if values.get("pacs_ingest") else None)


@dataclass
class Sources:
    """Output folders found under the data roots, by kind."""

    ingests: list[Path] = field(default_factory=list)
    drafts: list[Path] = field(default_factory=list)
    zero_shots: list[Path] = field(default_factory=list)
    video_roots: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # data roots that are not folders (shown as given)


def discover(data: Iterable[Path], max_depth: int = 3) -> Sources:
    """Walk each data root (not following symlinks, ``max_depth`` levels) for the jobs' output folders."""
    found = Sources()
    for root in data:
        root = Path(root)
        if not root.is_dir():
            found.missing.append(str(root))
            continue
        base_depth = len(root.resolve().parts)
        for dirpath, dirnames, filenames in os.walk(root.resolve(), followlinks=False):
            here = Path(dirpath)
            files = set(filenames)
            if VIDEOS in files:
                found.ingests.append(here)
            if "drafts.jsonl" in files or ("errors.jsonl" in files and (here / "drafts").is_dir()):
                found.drafts.append(here)
            if "predictions" in dirnames and ({"metrics.json", "settings.json"} & files):
                found.zero_shots.append(here)
            if "videos" in dirnames and any(p.suffix.lower() in VIDEO_EXTS for p in (here / "videos").iterdir()):
                found.video_roots.append(here)
            depth = len(here.parts) - base_depth
            dirnames[:] = sorted(d for d in dirnames
                                 if depth < max_depth and d not in _SKIP_DIRS and not d.startswith("."))
    for kind in ("ingests", "drafts", "zero_shots", "video_roots"):
        setattr(found, kind, sorted(set(getattr(found, kind))))
    return found


# --------------------------------------------------------------------------- echo: ingest


def read_videos(ingests: Sequence[Path]) -> pd.DataFrame:
    """The loops of every ingest folder, with an ``ingest`` column (index into ``ingests``)."""
    frames = []
    for i, folder in enumerate(ingests):
        df = IngestFolder(folder).read_videos()
        df = df.drop(columns=[c for c in ("path",) if c in df])  # keep_paths ingests: paths are never shown
        df["ingest"] = i
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["study_key", "video_key", "view", "frames", "fps", "sector_box", "ingest"])
    return pd.concat(frames, ignore_index=True).drop_duplicates("video_key")


MAX_MEASUREMENTS = 2000  # rows of one study read from measurements.csv (hostile input is bounded)
_CHUNK_ROWS = 50_000  # measurements.csv is scanned in chunks: memory does not grow with the ingest
_MEASUREMENT_NEEDS = ("study_key", "image_key", "concept_meaning", "value", "unit", "replaced")


def read_measurements(roots: Sequence[Path], ingests: Sequence[Path], study_key: str) -> tuple[pd.DataFrame, bool]:
    """The study's rows of ``measurements.csv`` (vendor SR measurements, docs/echo_data.md) from the first ingest
    that has any, every cell a string; and whether rows beyond ``MAX_MEASUREMENTS`` were left unread.

    Raises ``MedvidError`` (message without any path) when the file is refused or is not a measurements table.
    """
    for n, ingest in enumerate(ingests, 1):
        if not IngestFolder(ingest).measurements.exists():
            continue
        name = f"{MEASUREMENTS} of ingest {n}"
        try:
            rows, more = _study_rows(resolve_under(ingest, MEASUREMENTS, roots), study_key, name)
        except PathRefused as exc:
            raise MedvidError(f"{name} refused: {exc}") from exc
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise MedvidError(f"{name} is unreadable ({type(exc).__name__})") from exc
        if len(rows):
            return rows, more
    return pd.DataFrame(columns=list(_MEASUREMENT_NEEDS)), False


def _study_rows(path: Path, study_key: str, name: str) -> tuple[pd.DataFrame, bool]:
    found: list[pd.DataFrame] = []
    with pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=_CHUNK_ROWS) as chunks:
        for chunk in chunks:
            if missing := [c for c in _MEASUREMENT_NEEDS if c not in chunk]:
                raise MedvidError(f"{name} is not a measurements table (no {', '.join(missing)} column)")
            found.append(chunk[chunk["study_key"] == study_key])
            if sum(map(len, found)) > MAX_MEASUREMENTS:
                break
    rows = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=list(_MEASUREMENT_NEEDS))
    return rows.iloc[:MAX_MEASUREMENTS], len(rows) > MAX_MEASUREMENTS


def is_replaced(rows: pd.DataFrame) -> pd.Series:
    """Which measurement rows a later or better SR version replaced (``replaced`` written as True / 1)."""
    return rows["replaced"].str.strip().str.lower().isin(("true", "1"))


def measurement_table(rows: pd.DataFrame, loops: pd.DataFrame, views: dict[str, str],
                      show_replaced: bool = False) -> pd.DataFrame:
    """Display rows of a study's measurements: current ones (all with ``show_replaced``, then with a ``replaced``
    column), each with the loop it was taken on: ``image_key`` matched to the loops' ``instance_key``, named by
    its view (``views``: video key → view) and key, else "not in this study's loops"."""
    replaced = is_replaced(rows)
    by_instance: dict[str, str] = {}
    if "instance_key" in loops:
        for video, instance in zip(loops["video_key"], loops["instance_key"]):
            by_instance.setdefault(str(instance), video)

    def taken_on(image: str) -> str:
        if not image:
            return "no image named"
        video = by_instance.get(image)
        return f"{views.get(video) or 'unknown view'} loop {video}" if video else "not in this study's loops"

    shown = rows if show_replaced else rows[~replaced]
    out = pd.DataFrame({"measurement": shown["concept_meaning"], "section": shown.get("section", ""),
                        "value": shown["value"], "unit": shown["unit"], "method": shown.get("method_meaning", ""),
                        "taken on": shown["image_key"].map(taken_on)})
    if show_replaced:
        out["replaced"] = replaced[shown.index].map({True: "replaced", False: ""})
    return out.reset_index(drop=True)


MAX_OTHER_STUDIES = 5  # other studies of the patient shown beside a study


def same_patient(videos: pd.DataFrame, study_key: str) -> list[str]:
    """The patient's other studies (same non-blank ``patient_key`` in the ingest), by key; the ingest keeps no
    study date, so they are not ordered by time. At most ``MAX_OTHER_STUDIES``."""
    if "patient_key" not in videos:
        return []
    patients = {str(p) for p in videos.loc[videos["study_key"] == study_key, "patient_key"] if p and str(p) != "nan"}
    if not patients:
        return []
    others = videos.loc[videos["patient_key"].astype(str).isin(patients), "study_key"]
    return sorted(set(others) - {study_key})[:MAX_OTHER_STUDIES]


def loop_names(views: dict[str, str]) -> dict[str, str]:
    """A reader's name for each loop (video key → view): the view, numbered when the study has several of it
    ("A4C 1", "A4C 2"), so tables name loops by what they show rather than by key."""
    counts: dict[str, int] = {}
    for view in views.values():
        counts[view] = counts.get(view, 0) + 1
    seen: dict[str, int] = {}
    names = {}
    for key, view in views.items():
        seen[view] = seen.get(view, 0) + 1
        names[key] = f"{view} {seen[view]}" if counts[view] > 1 else view
    return names


def dicom_file(cfg: AppConfig, ingest: Path, video_key: str) -> Path:
    """The DICOM file of a loop: its relative path from the ingest's key file, under a DICOM root.

    Raises ``MedvidError`` (message without any path) when no DICOM root is configured, the key is
    unknown, or the file is missing under every DICOM root.
    """
    if not cfg.dicom_roots:
        raise MedvidError("no DICOM root given (start the app with --dicom-root DIR to see the loops)")
    rel = _key_paths(IngestFolder(ingest, cfg.keys_dir)).get(video_key)
    if rel is None:
        raise MedvidError("loop not in the ingest's key file")
    for root in cfg.dicom_roots:
        try:
            path = resolve_under(Path(root), rel, cfg.roots)
        except PathRefused as exc:
            raise MedvidError(f"loop file refused: {exc}") from exc
        if path.is_file():
            return path
    raise MedvidError("loop file not found under the DICOM root (moved or deleted since ingest)")


_PATHS_CACHE: dict[Path, tuple[int, dict[str, str]]] = {}


def _key_paths(folder: IngestFolder) -> dict[str, str]:
    """``IngestFolder.video_paths``, cached per key file modification time; errors name no path (shown in the app)."""
    path = folder.paths_file
    if not path.is_file():
        raise MedvidError("the ingest's local key file is missing: loops cannot be located")
    stamp = path.stat().st_mtime_ns
    hit = _PATHS_CACHE.get(path)
    if hit is None or hit[0] != stamp:
        try:
            rows = folder.video_paths()
        except (MedvidError, KeyError, AttributeError) as exc:
            raise MedvidError("the ingest's local key file is unreadable: loops cannot be located") from exc
        hit = _PATHS_CACHE[path] = (stamp, rows)
    return hit[1]


def loop_cache_path(cfg: AppConfig, video_key: str) -> Path:
    """Where the rendered MP4 of a loop lives: ``<cache>/loops/<video_key>.mp4``, refused outside the roots."""
    if cfg.cache is None or not valid_key(video_key):
        raise MedvidError("no loop cache folder")
    return resolve_under(cfg.cache, f"loops/{video_key}.mp4", cfg.roots)


# --------------------------------------------------------------------------- echo: drafts and reviews


@dataclass
class Draft:
    """One study's draft: the parsed line, its exact text (for ``draft_sha256``) and its folder."""

    study_key: str
    data: dict[str, Any]
    line: str
    folder: Path

    @property
    def sha256(self) -> str:
        return draft_sha256(self.line)

    @property
    def sections(self) -> dict[str, dict[str, Any]]:
        return self.data.get("sections") or {}

    @property
    def left_out(self) -> list[dict[str, str]]:
        """Loops the draft was made without (``left_out``: unreadable ones), as ``{loop, reason, detail}`` strings."""
        rows = self.data.get("left_out")
        if not isinstance(rows, list):
            return []
        return [{"loop": str(e.get("video_key") or "?"), "reason": str(e.get("reason") or "unknown"),
                 "detail": str(e.get("detail") or "")} for e in rows if isinstance(e, dict)]


@dataclass
class DraftTable:
    """Drafts, draft errors and unreadable lines across every draft folder."""

    drafts: dict[str, Draft] = field(default_factory=dict)
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)  # "folder #n: line N" descriptions, no content


def draft_sha256(line: str) -> str:
    """sha256 of a drafts.jsonl line as stored (UTF-8, without its line ending)."""
    return hashlib.sha256(line.rstrip("\r\n").encode("utf-8")).hexdigest()


def read_drafts(folders: Sequence[Path]) -> DraftTable:
    """Parse ``drafts.jsonl`` and ``errors.jsonl`` of each draft folder; corrupt lines are counted, not fatal.

    A study drafted in several folders keeps the first folder's draft.
    """
    table = DraftTable()
    for n, folder in enumerate(folders):
        path = folder / "drafts.jsonl"
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError:
                        table.bad_lines.append(f"draft folder {n + 1}, line {i}: not JSON")
                        continue
                    key = data.get("study_key") if isinstance(data, dict) else None
                    if not valid_key(key) or not isinstance(data.get("sections"), dict):
                        table.bad_lines.append(f"draft folder {n + 1}, line {i}: no study key or sections")
                        continue
                    table.drafts.setdefault(key, Draft(key, data, line.rstrip("\r\n"), folder))
        errors = folder / "errors.jsonl"
        if errors.is_file():
            with open(errors, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and valid_key(row.get("study_key")):
                        table.errors.setdefault(row["study_key"], []).append(row)
    return table


def study_status(key: str, table: DraftTable, review: dict[str, Any] | None) -> str:
    """One of ``STATUSES`` for a study (see the drafting contract)."""
    if key in table.drafts:
        if review is not None:
            return "signed off" if review.get("status") == "signed_off" else "edited"
        return "draft"
    return "error" if key in table.errors else "no draft"


def phenotype_value(p: Any) -> float | None:
    """The number a phenotype entry carries (numeric ``value`` or binary ``score``), None when unknown."""
    if not isinstance(p, dict):
        return None
    v = p.get("value", p.get("score"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def study_table(videos: pd.DataFrame, table: DraftTable, reviews: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """One row per study (ingested or drafted): key, loops, views, status and numeric phenotypes."""
    keys = sorted(set(videos["study_key"]) | set(table.drafts) | set(table.errors))
    by_study = videos.groupby("study_key")
    rows = []
    for key in keys:
        loops = by_study.get_group(key) if key in by_study.groups else videos.iloc[:0]
        draft = table.drafts.get(key)
        views = sorted({str(v) for v in loops.get("view", []) if v})
        if not views and draft is not None:
            views = sorted({str(v.get("view")) for v in draft.data.get("videos") or [] if v.get("view")})
        row = {"study": key, "loops": len(loops), "views": ", ".join(views),
               "status": study_status(key, table, reviews.get(key))}
        for name, p in ((draft.data.get("phenotypes") or {}) if draft else {}).items():
            row[name] = phenotype_value(p)
        rows.append(row)
    return pd.DataFrame(rows, columns=["study", "loops", "views", "status"] if not rows else None)


def filter_studies(df: pd.DataFrame, query: str = "", statuses: Sequence[str] = (), phenotype: str | None = None,
                   op: str = "<", value: float | None = None, texts: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows matching a search (study key, or a finding the draft text affirms: ``finding_matches``), statuses,
    and ``phenotype op value``."""
    keep = pd.Series(True, index=df.index)
    q = query.strip().lower()
    if q:
        texts = texts or {}
        keep &= df["study"].map(lambda k: q in k.lower() or finding_matches(texts.get(k, ""), q))
    if statuses:
        keep &= df["status"].isin(list(statuses))
    if phenotype and phenotype in df and value is not None:
        col = pd.to_numeric(df[phenotype], errors="coerce")
        keep &= (col < value) if op == "<" else (col >= value)
    return df[keep]


# --------------------------------------------------------------------------- echo: worklist
# The order, flags and search are the library's (medvid.report.worklist); this part adapts them to the app's tables.


def finding_matches(text: str, query: str) -> bool:
    """True when ``text`` affirms ``query`` (negation respected: ``medvid.report.worklist.matches``)."""
    return worklist_rules.matches(query, {"text": text})


def phenotype_call(p: Any) -> str:
    """A phenotype as a reader states it: a binary one as its call with the score against the threshold
    ("positive (0.15 ≥ 0.10)"), a numeric one as an estimate rounded to clinical precision ("62 (estimate)")."""
    value = phenotype_value(p)
    if value is None:
        return "—"
    if p.get("kind") == "binary" or "threshold" in p:
        thr = p.get("threshold")
        if not isinstance(thr, (int, float)) or isinstance(thr, bool):
            return f"score {value:.2f} (no threshold)"
        return f"positive ({value:.2f} ≥ {thr:.2f})" if value >= thr else f"negative ({value:.2f} < {thr:.2f})"
    shown = f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
    spread = p.get("spread")
    if isinstance(spread, (int, float)) and not isinstance(spread, bool) and np.isfinite(spread):
        shown += f" ± {spread:.0f}" if abs(spread) >= 10 or abs(value) >= 10 else f" ± {spread:.1f}"
    return f"{shown} (estimate)"


def priority_flags(draft: Draft | None) -> list[str]:
    """Why a drafted study should be read first (``medvid.report.worklist.priority_flags``)."""
    return worklist_rules.priority_flags(draft.data) if draft is not None else []


def worklist(df: pd.DataFrame, table: DraftTable) -> pd.DataFrame:
    """The study table in reading order (``medvid.report.worklist.order``: awaiting review first, then by priority
    flags, then the oldest draft, then key); adds ``flags`` and ``drafted`` columns."""
    out = df.copy()
    drafts = [table.drafts.get(k) for k in out["study"]]
    out["flags"] = [", ".join(priority_flags(d)) for d in drafts]
    out["drafted"] = [str(((d.data.get("provenance") or {}).get("created") or "")) if d else "" for d in drafts]
    entries = [{"index": i, "study_key": k, "status": st, "draft": d.data if d else {}, "time": t or None}
               for i, k, st, d, t in zip(out.index, out["study"], out["status"], drafts, out["drafted"])]
    return out.loc[[e["index"] for e in worklist_rules.order(entries)]].reset_index(drop=True)


# --------------------------------------------------------------------------- surgery


def read_predictions(roots: Sequence[Path], folder: Path, video: str) -> pd.DataFrame:
    """``predictions/<video>.csv`` of a zero-shot folder (phase or tools)."""
    if not valid_key(video):
        raise PathRefused("not a video name")
    path = resolve_under(folder, f"predictions/{video}.csv", roots)
    if not path.is_file():
        raise MedvidError(f"no predictions for {video}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedvidError(f"predictions for {video} are unreadable ({type(exc).__name__})") from exc
    if "time_s" not in df:
        raise MedvidError(f"predictions for {video} have no time_s column (not a zero-shot output)")
    return df


def prediction_videos(folder: Path) -> list[str]:
    """Video names with a predictions CSV in a zero-shot folder."""
    pred = folder / "predictions"
    return sorted(p.stem for p in pred.glob("*.csv") if valid_key(p.stem)) if pred.is_dir() else []


def zero_shot_task(folder: Path) -> str:
    """``phase`` or ``tools``: from metrics.json, else from a predictions CSV header."""
    try:
        task = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("task")
        if task in ("phase", "tools"):
            return task
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    for video in prediction_videos(folder)[:1]:
        with open(folder / "predictions" / f"{video}.csv", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        return "phase" if "pred_index" in header else "tools"
    return "unknown"


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """A zero-shot folder's metrics.json, None when absent or unreadable."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def find_video(roots: Sequence[Path], video_roots: Sequence[Path], video: str) -> Path | None:
    """``<root>/videos/<video>.<ext>`` in the first Cholec80-layout root that has it."""
    if not valid_key(video):
        return None
    for root in video_roots:
        for ext in VIDEO_EXTS:
            try:
                path = resolve_under(root, f"videos/{video}{ext}", roots)
            except PathRefused:
                continue
            if path.is_file():
                return path
    return None


def phase_names(df: pd.DataFrame) -> list[str]:
    """Phase classes of a phase predictions table, in column order."""
    return [c[2:] for c in df.columns if c.startswith("p_")]


def tool_names(df: pd.DataFrame) -> list[str]:
    """Tool classes of a tools predictions table."""
    return [c[5:] for c in df.columns if c.startswith("pred_") and c != "pred_index" and c != "pred_smoothed_index"]
