"""Versioned reviews of drafted reports (no Streamlit here): who changed what, when and why, never lost.

In a draft folder's ``reviewed/`` (``docs/drafting_contract.md``, ``docs/app.md``):

- ``<study_key>.v<N>.json``: version N of a study's review, created exclusively and never rewritten. A save
  names the version it was made on; against any other (another tab or reviewer saved since) it is refused
  (optimistic concurrency; two saves racing for the same N: the file system lets one create it).
- ``<study_key>.json``: a copy of the latest version (the drafting contract's file). One written before
  versions existed reads as version 1 and is kept as ``.v1.json`` at the next save.
- A signed-off version is final: every later version is an amendment and needs a reason (who / when / why).
- ``audit.jsonl``: one line per save, sign-off, amendment and export, appended (never rewritten).
- ``<study_key>.v<N>.txt`` / ``.v<N>.sr.dcm``: the exports of version N, so an export always says which
  version it shows (an earlier FINAL export never stands for a later edit).

Nothing is ever written through a symbolic link: a linked ``reviewed/`` leaves the study read-only.
"""
from __future__ import annotations

import difflib
import fcntl
import json
import os
import re
import tempfile
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from pydicom.valuerep import validate_value

from medvid.errors import MedvidError, PathRefused
from medvid.report.phenotypes import clinical_value
from medvid.report.sr import Signature
from medvid.utils import atomic_write_text, resolve_under, valid_key

REVIEWED = "reviewed"
AUDIT = "audit.jsonl"
MAX_REVIEW_BYTES = 4 << 20  # a review larger than this is not read (hostile input is bounded)


class ReviewConflict(MedvidError):
    """A save made on a version that is no longer the latest."""


def _check_key(study_key: str) -> None:
    if not valid_key(study_key):
        raise PathRefused("not a study key")


def check_reviewer(name: str) -> str:
    """The reviewer's name, stripped, if it fits a DICOM PN (the SR's observer); MedvidError saying why not.

    At most 64 characters per component group, at most 3 groups (``=``) of at most 5 components (``^``),
    no backslash (DICOM's value separator) and no control characters.
    """
    name = (name or "").strip()
    if not name:
        raise MedvidError("type your name (reviewer) before saving")
    if any(unicodedata.category(c) == "Cc" for c in name) or "\\" in name:
        raise MedvidError("the reviewer name may not contain a backslash or control characters (DICOM PN)")
    if any(len(group.split("^")) > 5 for group in name.split("=")):
        raise MedvidError("the reviewer name has more than 5 '^'-separated parts (DICOM PN)")
    try:
        validate_value("PN", name, 2)  # pydicom's RAISE mode: group length and count
    except ValueError as exc:
        raise MedvidError(f"the reviewer name does not fit a DICOM person name: {exc}") from exc
    return name


def writable(roots: Sequence[Path], folder: Path) -> str | None:
    """Why reviews of this draft folder cannot be written (None when they can): no writing through links."""
    target = Path(folder) / REVIEWED
    if target.is_symlink():
        return ("the draft folder's reviewed/ is a symbolic link: the app does not write through links, so this "
                "study is read-only (make reviewed/ a plain folder to review it)")
    try:
        resolve_under(Path(folder), REVIEWED, roots)
    except PathRefused:
        return "the draft folder is outside the data roots: this study is read-only"
    return None


def _dir(roots: Sequence[Path], folder: Path) -> Path:
    """``reviewed/`` of a draft folder, refused outside the roots."""
    return resolve_under(Path(folder), REVIEWED, roots)


def _read(path: Path, study_key: str) -> dict[str, Any] | None:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_REVIEW_BYTES:
            return None
        review = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(review, dict) or review.get("study_key") != study_key:
        return None
    version = review.get("version", 1)
    return {**review, "version": version} if isinstance(version, int) and version >= 1 else None


def _version_files(directory: Path, study_key: str) -> dict[int, Path]:
    pattern = re.compile(rf"^{re.escape(study_key)}\.v([1-9][0-9]{{0,8}})\.json$")
    if not directory.is_dir():
        return {}
    return {int(m.group(1)): directory / name for name in os.listdir(directory) if (m := pattern.match(name))}


def history(roots: Sequence[Path], folder: Path, study_key: str) -> list[dict[str, Any]]:
    """Every readable version of a study's review, oldest first (a pre-versions ``<key>.json`` is version 1)."""
    _check_key(study_key)
    try:
        directory = _dir(roots, folder)
    except PathRefused:
        return []
    files = _version_files(directory, study_key)
    if not files:
        legacy = _read(directory / f"{study_key}.json", study_key)
        return [legacy] if legacy else []
    return [r for n in sorted(files) if (r := _read(files[n], study_key)) and r["version"] == n]


def latest(roots: Sequence[Path], folder: Path, study_key: str) -> dict[str, Any] | None:
    """The current version of a study's review (with its ``version``), None when none was saved."""
    versions = history(roots, folder, study_key)
    return versions[-1] if versions else None


def is_final(review: dict[str, Any] | None) -> bool:
    """True once a version was signed off: later versions are amendments."""
    return bool(review) and (review.get("status") == "signed_off" or "amendment" in review)


def signature(review: dict[str, Any] | None) -> Signature | None:
    """Who signed ``review`` off and when (for its SR's VerifyingObserverSequence); None unless this version
    itself was signed off (an amendment saved without signing is not verified)."""
    if not review or review.get("status") != "signed_off":
        return None
    return Signature(reviewer=str(review.get("reviewer") or ""), time=str(review.get("time") or ""))


def unified_diff(old: str, new: str, name: str) -> str:
    """Unified diff of one section's text, draft → reviewed ('' when equal): one line per header, hunk, removed
    and added line, each ending in a newline (a text without a final newline no longer runs its last removed
    line into the first added one)."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), fromfile=f"draft/{name}",
                                 tofile=f"reviewed/{name}", lineterm="")
    return "".join(f"{line}\n" for line in lines)


def _create(path: Path, text: str) -> bool:
    """Write ``path`` complete or not at all, only if it does not exist yet; False when it did."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # fails when it exists: two writers cannot both create version N
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def append_audit(directory: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``audit.jsonl`` in a single locked write (never rewrites earlier lines)."""
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(directory / AUDIT, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(roots: Sequence[Path], folder: Path) -> list[dict[str, Any]]:
    """The audit log of a draft folder (a line cut by a crash is skipped)."""
    path = _dir(roots, folder) / AUDIT
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _now(now: datetime | None) -> str:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")


def _writable_dir(roots: Sequence[Path], folder: Path) -> Path:
    if (reason := writable(roots, folder)) is not None:
        raise MedvidError(reason)
    directory = _dir(roots, folder)
    directory.mkdir(exist_ok=True)
    return directory


def save(roots: Sequence[Path], draft: Any, sections: dict[str, str], reviewer: str, sign_off: bool,
         base_version: int, reason: str = "", phenotypes: dict[str, Any] | None = None,
         now: datetime | None = None) -> dict[str, Any]:
    """Save a new version of ``draft``'s review (a ``store.Draft``), made on ``base_version`` (0: none yet).

    Refused with a clear message when the name is not a valid DICOM PN, when another save happened since
    ``base_version``, or when the report was signed off and no amendment ``reason`` is given. The draft files
    are never touched.
    """
    reviewer = check_reviewer(reviewer)
    key = draft.study_key
    _check_key(key)
    directory = _writable_dir(roots, draft.folder)
    current = latest(roots, draft.folder, key)
    current_version = current["version"] if current else 0
    if base_version != current_version:
        who = f" by {current.get('reviewer')} at {current.get('time')}" if current else ""
        raise ReviewConflict(f"not saved: this review changed since you opened it (now version {current_version}"
                             f"{who}; you edited version {base_version}). Load the latest version and redo "
                             "your change.")
    if is_final(current) and not reason.strip():
        raise MedvidError(f"not saved: version {current_version} was signed off and cannot be changed; to amend "
                          "it, give the reason for the amendment")
    time = _now(now)
    originals = {name: str(sec.get("text") or "") for name, sec in draft.sections.items()}
    review: dict[str, Any] = {
        "study_key": key,
        "status": "signed_off" if sign_off else "edited",
        "reviewer": reviewer,
        "time": time,
        "sections": {name: sections.get(name, text) for name, text in originals.items()},
        "diff": {name: unified_diff(text, sections.get(name, text), name) for name, text in originals.items()},
        "draft_sha256": draft.sha256,
        "version": current_version + 1,
    }
    if phenotypes:
        review["phenotypes"] = phenotypes
    if is_final(current):
        review["amendment"] = {"amends": current_version, "reason": reason.strip(), "reviewer": reviewer,
                               "time": time}
    if current and not _version_files(directory, key):  # a review saved before versions: keep it as v1
        _create(directory / f"{key}.v1.json", json.dumps(current, indent=2) + "\n")
    text = json.dumps(review, indent=2) + "\n"
    if not _create(directory / f"{key}.v{review['version']}.json", text):
        raise ReviewConflict(f"not saved: another save made version {review['version']} at the same moment. "
                             "Load the latest version and redo your change.")
    atomic_write_text(directory / f"{key}.json", text)
    action = "amend" if "amendment" in review else ("sign_off" if sign_off else "save")
    append_audit(directory, {"time": time, "action": action, "study_key": key, "version": review["version"],
                             "reviewer": reviewer, "status": review["status"], "draft_sha256": draft.sha256,
                             **({"reason": reason.strip()} if "amendment" in review else {})})
    return review


def export_path(roots: Sequence[Path], folder: Path, study_key: str, version: int, suffix: str) -> Path:
    """``reviewed/<study_key>.v<version><suffix>`` (``.txt`` or ``.sr.dcm``), refused outside the roots."""
    _check_key(study_key)
    return resolve_under(Path(folder), f"{REVIEWED}/{study_key}.v{int(version)}{suffix}", roots)


def exported(roots: Sequence[Path], folder: Path, study_key: str, version: int, suffix: str) -> Path | None:
    """The export of that version, when it was made (never through a link)."""
    try:
        path = export_path(roots, folder, study_key, version, suffix)
    except PathRefused:
        return None
    return path if path.is_file() and not path.is_symlink() else None


def record_export(roots: Sequence[Path], folder: Path, review: dict[str, Any], files: Sequence[Path],
                  reviewer: str, now: datetime | None = None) -> None:
    """Audit line for an export of ``review``'s version."""
    directory = _writable_dir(roots, folder)
    append_audit(directory, {"time": _now(now), "action": "export", "study_key": review["study_key"],
                             "version": review["version"], "reviewer": reviewer, "status": review.get("status"),
                             "files": [p.name for p in files]})


def reviewed_text(review: dict[str, Any], phenotypes: dict[str, Any]) -> str:
    """Readable export of one review version (``reviewed/<study_key>.v<N>.txt``)."""
    final = review.get("status") == "signed_off"
    head = (f"{'FINAL' if final else 'REVIEWED (not signed off)'} report, study {review['study_key']}, "
            f"review version {review['version']}, {'signed off' if final else 'saved'} by {review.get('reviewer')} "
            f"at {review.get('time')}")
    lines = [head]
    if amendment := review.get("amendment"):
        lines.append(f"Amends version {amendment.get('amends')}: {amendment.get('reason')}")
    lines.append("")
    lines += [f"{name}: {text}" for name, text in (review.get("sections") or {}).items()]
    if phenotypes:  # model estimates, never measurements: at clinical precision and said so
        lines += ["", "Estimates by medvid (not measured):"] + [f"  {name}: {clinical_value(name, float(value))}"
                                                               for name, value in phenotypes.items()]
    return "\n".join(lines) + "\n"
