"""The output folder of ``medvid draft`` (``docs/drafting_contract.md``), written so a killed run resumes.

A finished study leaves ``OUT/.draft_state/done/<study_key>.json`` (written last, atomically, after its
``drafts/<study_key>.txt`` and ``.sr.dcm``); a failed one ``OUT/.draft_state/errors/<study_key>.json``.
``drafts.jsonl`` and ``errors.jsonl`` are assembled from those records, so a study finished twice (a resumed
run) appears once. The settings a folder was drafted with are kept in ``.draft_state/settings.json``: a
re-run with other settings is refused, naming the settings that differ (``overwrite=true`` starts afresh).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from medvid.report.draft import render_text
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
        atomic_write_text(self.state / "errors" / f"{study_key}.json", json.dumps(errors))

    def write_study(self, row: Mapping[str, Any], provenance: Mapping[str, Any], *, write_sr: bool = True,
                    study_instance_uid: str | None = None) -> None:
        """Text, SR (referencing ``study_instance_uid``, else a pseudonymous UID), then the done record (last: it
        marks the study finished). ``row``: one :meth:`medvid.report.draft.Drafter.draft` block (+ ``findings``)."""
        key = row["study_key"]
        record = {"study_key": key, "status": "draft", "in_bank": bool(row.get("in_bank", False)),
                  "sections": row["sections"], "phenotypes": row["phenotypes"],
                  "findings": row.get("findings", {}), "videos": row["videos"],
                  "provenance": {**provenance, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                  "text_path": f"drafts/{key}.txt", "sr_path": f"drafts/{key}.sr.dcm" if write_sr else None}
        atomic_write_text(self.out / record["text_path"], render_text(record))
        if write_sr:
            from medvid.report.sr import write_report_sr

            measurements = {name: p["value"] for name, p in row["phenotypes"].items() if p["kind"] == "numeric"}
            write_report_sr(self.out / record["sr_path"], {s: v["text"] for s, v in row["sections"].items()},
                            measurements, study_key=key, study_instance_uid=study_instance_uid, final=False)
        atomic_write_text(self.state / "done" / f"{key}.json", json.dumps(record))
        (self.state / "errors" / f"{key}.json").unlink(missing_ok=True)

    def assemble(self) -> tuple[int, int]:
        """``drafts.jsonl`` / ``errors.jsonl`` from the per-study records (sorted by study key, atomic); returns
        their line counts. Shards assemble one at a time (a lock), so the last to finish writes the complete set."""
        import fcntl

        with open(self.state / "assemble.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = sorted((self.state / "done").glob("*.json"))
            n = write_jsonl(self.out / "drafts.jsonl", (json.loads(p.read_text()) for p in done))
            finished = {p.stem for p in done}
            errors = [e for p in sorted((self.state / "errors").glob("*.json")) if p.stem not in finished
                      for e in json.loads(p.read_text())]
            write_jsonl(self.out / "errors.jsonl", errors)
            return n, len(errors)
