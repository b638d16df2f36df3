"""The output folder of ``medvid draft`` (``docs/drafting_contract.md``), written so a killed run resumes.

A finished study leaves ``OUT/.draft_state/done/<study_key>.json`` (written last, atomically, after its
``drafts/<study_key>.txt`` and ``.sr.dcm``); a failed one ``OUT/.draft_state/errors/<study_key>.json``.
Each record is also appended to ``drafts.jsonl`` / ``errors.jsonl`` as the study finishes (one fsync'd write
per line), so the review app sees drafts while a run goes on; at the start and end of a run (and on Ctrl-C)
both files are re-assembled from the records, sorted by study key, so a study finished twice (a resumed run)
appears once and the final files equal an uninterrupted run's. The settings a folder was drafted with are
kept in ``.draft_state/settings.json``: a re-run with other settings is refused, naming the settings that differ
(``overwrite=true`` starts afresh).
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from medvid.report.draft import left_out_note, render_text
from medvid.runs import claim_out
from medvid.utils import atomic_write_text, write_jsonl

STATE = ".draft_state"


class DraftsFolder:
    """``OUT`` of ``medvid draft``: per-study records under ``OUT/.draft_state``, assembled into the contract files."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.state = self.out / STATE

    def prepare(self, settings: Mapping[str, Any], overwrite: bool = False) -> None:
        """Claim ``OUT`` (:func:`medvid.runs.claim_out`; ``settings``, JSON values, recorded in
        ``.draft_state/settings.json``): the same settings resume, others are refused unless ``overwrite``,
        which first discards this folder's earlier drafts (its own records and the files they name, nothing else)."""
        done, errors = self.state / "done", self.state / "errors"
        claim_out(self.out, "draft", settings, overwrite=overwrite,
                  has_results=any(done.glob("*.json")) or any(errors.glob("*.json")),
                  own=lambda out: (out / STATE).is_dir(), record=f"{STATE}/settings.json")
        if overwrite:
            for record in done.glob("*.json"):
                for name in (f"{record.stem}.txt", f"{record.stem}.sr.dcm"):
                    (self.out / "drafts" / name).unlink(missing_ok=True)
                record.unlink()
            for record in errors.glob("*.json"):
                record.unlink()
            for name in ("drafts.jsonl", "errors.jsonl"):
                (self.out / name).unlink(missing_ok=True)
        done.mkdir(parents=True, exist_ok=True)
        errors.mkdir(parents=True, exist_ok=True)

    def is_done(self, study_key: str) -> bool:
        return (self.state / "done" / f"{study_key}.json").is_file()

    def write_errors(self, study_key: str, errors: list[dict[str, Any]]) -> None:
        """The study's error record, its lines appended to ``errors.jsonl`` (unless an earlier run's same record
        is there already)."""
        path, text = self.state / "errors" / f"{study_key}.json", json.dumps(errors)
        with self._lock():
            if not (path.is_file() and path.read_text() == text):
                atomic_write_text(path, text)
                _append_lines(self.out / "errors.jsonl", [json.dumps(e) for e in errors])

    def write_study(self, row: Mapping[str, Any], provenance: Mapping[str, Any], *, write_sr: bool = True,
                    study_instance_uid: str | None = None) -> None:
        """Text, SR (referencing ``study_instance_uid``, else a pseudonymous UID), then the done record (it marks
        the study finished) and its drafts.jsonl line. ``row``: one :meth:`medvid.report.draft.Drafter.draft` block
        (+ ``findings``, ``left_out``)."""
        key = row["study_key"]
        record = {"study_key": key, "status": "draft", "in_bank": bool(row.get("in_bank", False)),
                  "sections": row["sections"], "phenotypes": row["phenotypes"],
                  "findings": row.get("findings", {}), "videos": row["videos"], "left_out": row.get("left_out", []),
                  "provenance": {**provenance, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                  "text_path": f"drafts/{key}.txt", "sr_path": f"drafts/{key}.sr.dcm" if write_sr else None}
        atomic_write_text(self.out / record["text_path"], render_text(record))
        if write_sr:
            from medvid.report.sr import Identity, write_report_sr

            estimates = {name: p["value"] for name, p in row["phenotypes"].items() if p["kind"] == "numeric"}
            write_report_sr(self.out / record["sr_path"], {s: v["text"] for s, v in row["sections"].items()},
                            estimates, study_key=key, comment=left_out_note(record["left_out"]),
                            identity=Identity({"StudyInstanceUID": study_instance_uid}) if study_instance_uid else None)
        line = json.dumps(record)
        with self._lock():  # an assemble sees the study in both or neither of done/ and drafts.jsonl
            atomic_write_text(self.state / "done" / f"{key}.json", line)
            _append_lines(self.out / "drafts.jsonl", [line])
        (self.state / "errors" / f"{key}.json").unlink(missing_ok=True)

    def assemble(self) -> tuple[int, int]:
        """``drafts.jsonl`` / ``errors.jsonl`` from the per-study records (sorted by study key, atomic); returns
        their line counts. Shards assemble one at a time (a lock), so the last to finish writes the complete set.
        Also drops a line a killed run left torn (the per-study records are the truth)."""
        with self._lock():
            done = sorted((self.state / "done").glob("*.json"))
            n = write_jsonl(self.out / "drafts.jsonl", (json.loads(p.read_text()) for p in done))
            finished = {p.stem for p in done}
            errors = [e for p in sorted((self.state / "errors").glob("*.json")) if p.stem not in finished
                      for e in json.loads(p.read_text())]
            write_jsonl(self.out / "errors.jsonl", errors)
            return n, len(errors)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive across processes (shards): appends and assembling never interleave."""
        with open(self.state / "assemble.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append complete lines with one write and fsync: a reader sees whole lines, at worst a torn last one
    after a crash (``DraftsFolder.assemble`` rewrites it)."""
    if not lines:
        return
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)
