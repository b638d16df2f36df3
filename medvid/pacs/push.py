"""Send reviewed reports back to the hospital's PACS as SRs filed under each patient's own study
(``medvid pacs push DRAFTS_OUT URL --ingest INGEST``).

What goes: per drafted study, its latest review version when that version was signed off (VERIFIED, by the
reviewer at the time of sign-off); with ``include_unverified`` also the latest review or the draft itself of a
study nobody signed (UNVERIFIED). Vendor measurements of the study (``measurements.csv``) go as measurements,
medvid's numeric phenotypes as estimates (``medvid.report.sr``).

Re-identification happens here and only here: the study's own identifiers and its loops' UIDs are read from the
ingest's private key folder (``identities.jsonl``); the identified SR exists only in memory on its way to the PACS.

Idempotent: ``DRAFTS_OUT/pacs_sent.jsonl`` records each send (pseudonymous study key, version, verified or
not, destination, time; no identifier, no UID). A version already sent to a destination is not sent again; a
later version goes as a new SR whose Predecessor Documents Sequence references the one it replaces. The SOP
Instance UID of a sent SR is derived from the study, the version and its verification, so a send repeated
after a lost record lands on the same instance in the PACS, not on a second copy.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from pydicom.uid import generate_uid

from medvid.errors import MedvidError
from medvid.io.ingest_folder import IngestFolder
from medvid.pacs.clients import Pacs, PacsError
from medvid.report import reviews
from medvid.report.draft import left_out_note
from medvid.report.sr import Identity, Reference, build_report_sr, measured_from_rows, sr_series_uid
from medvid.utils import progress as progress_bar, read_jsonl

log = logging.getLogger("medvid")

SENT = "pacs_sent.jsonl"


@dataclass(frozen=True)
class Outgoing:
    """One report to send: the study, the review version (0: the unreviewed draft), its text and signature."""

    draft: Mapping[str, Any]
    version: int
    review: Mapping[str, Any] | None

    @property
    def study_key(self) -> str:
        return str(self.draft["study_key"])

    @property
    def verified(self) -> bool:
        return reviews.signature(dict(self.review) if self.review else None) is not None


def sent_sop_uid(study_uid: str, version: int, verified: bool) -> str:
    """The SOP Instance UID of the SR sent for one version of a study's report (stable across resends)."""
    return generate_uid(entropy_srcs=["medvid-sr-sent", study_uid, str(version), str(verified)])


def read_sent(drafts_out: Path, destination: str) -> dict[str, list[dict[str, Any]]]:
    """Earlier sends to ``destination`` by study key, oldest first."""
    path = drafts_out / SENT
    out: dict[str, list[dict[str, Any]]] = {}
    if path.is_file():
        for row in read_jsonl(path):
            if row.get("destination") == destination and row.get("study_key"):
                out.setdefault(row["study_key"], []).append(row)
    return out


def send_status(drafts_out: str | Path, destination: str) -> dict[str, dict[str, Any]]:
    """The latest send of each study to ``destination`` (``PacsAddress.describe()``), by study key: its review
    ``version``, ``verified`` and ``time`` (what the review app's Send to PACS page shows)."""
    return {key: rows[-1] for key, rows in read_sent(Path(drafts_out), destination).items()}


def outgoing(drafts_out: Path, include_unverified: bool) -> tuple[list[Outgoing], int]:
    """What to send from a drafts folder, and how many drafted studies have no signed-off version (left out
    unless ``include_unverified``)."""
    drafts_file = drafts_out / "drafts.jsonl"
    if not drafts_file.is_file():
        raise MedvidError(f"{drafts_file}: missing; DRAFTS_OUT must be a `medvid draft` output folder")
    todo, unsigned = [], 0
    for draft in read_jsonl(drafts_file):
        key = draft.get("study_key")
        if not isinstance(key, str):
            continue
        review = reviews.latest([drafts_out], drafts_out, key)
        item = Outgoing(draft, int(review["version"]) if review else 0, review)
        if item.verified or include_unverified:
            todo.append(item)
        if not item.verified:
            unsigned += 1
    return todo, unsigned


def push(pacs: Pacs, drafts_out: str | Path, ingest: IngestFolder, destination: str, include_unverified: bool = False,
         progress: bool = True) -> dict[str, Any]:
    """Send what :func:`outgoing` finds to ``pacs``; returns counts only (no identifier). A PACS that cannot be
    reached or refuses the credentials stops the run (nothing is recorded for a report that did not arrive);
    a study the PACS does not hold, or a store it refuses, is counted and the batch goes on."""
    drafts_out = Path(drafts_out)
    todo, unsigned = outgoing(drafts_out, include_unverified)
    identities = ingest.identities()
    measured = _measurements(ingest)
    sent_before = read_sent(drafts_out, destination)
    counts: Counter[str] = Counter()
    errors: list[dict[str, str]] = []
    with progress_bar(todo, desc="pacs push", unit="study", enabled=progress) as bar:
        for item in bar:
            earlier = sent_before.get(item.study_key, [])
            if any(r["version"] == item.version and r["verified"] == item.verified for r in earlier):
                counts["already_sent"] += 1
                continue
            identity = identities.get(item.study_key)
            if identity is None:
                errors.append({"study_key": item.study_key, "reason": "no_identity",
                               "detail": "the ingest's key folder does not know this study (another ingest?)"})
                continue
            try:
                reason = _send(pacs, item, Identity(identity["study"], identity.get("instances") or {}),
                               measured.get(item.study_key, []), earlier[-1] if earlier else None)
            except PacsError as exc:
                if exc.reason in ("unreachable", "credentials"):
                    raise PacsError(exc.reason, f"{exc} after {counts['sent']} report(s) sent; rerun to "
                                                "continue") from exc
                reason = exc.reason
            if reason:
                errors.append({"study_key": item.study_key, "reason": reason,
                               "detail": "the PACS holds no such study" if reason == "unknown_study" else str(reason)})
                continue
            _record(drafts_out, {"study_key": item.study_key, "version": item.version, "verified": item.verified,
                                 "destination": destination,
                                 "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            counts["sent"] += 1
            counts["sent_verified" if item.verified else "sent_unverified"] += 1
            counts["amended" if earlier else "first_send"] += 1
    summary = {"drafts": str(drafts_out), "destination": destination, "candidates": len(todo),
               "not_signed_off": unsigned if not include_unverified else 0, **{k: counts[k] for k in (
                   "sent", "sent_verified", "sent_unverified", "first_send", "amended", "already_sent")},
               "errors": len(errors), "errors_by_reason": dict(Counter(e["reason"] for e in errors)),
               "error_studies": errors[:50]}
    log.info("pacs push: %d sent (%d verified), %d already sent, %d errors, %d not signed off", counts["sent"],
             counts["sent_verified"], counts["already_sent"], len(errors), summary["not_signed_off"])
    if not counts["sent"] and not counts["already_sent"]:
        raise MedvidError("nothing sent: " + (f"{len(errors)} error(s) {summary['errors_by_reason']}" if errors else
                                              "no signed-off report (sign reports off in the review app, or pass "
                                              "--include-unverified)"))
    return summary


def _send(pacs: Pacs, item: Outgoing, identity: Identity, measured: list, earlier: Mapping[str, Any] | None) -> str:
    """Build the identified SR in memory and store it; returns "" or the reason it was not sent."""
    study_uid = identity.study["StudyInstanceUID"]
    if study_uid not in pacs.find_studies({"StudyInstanceUID": study_uid}):
        return "unknown_study"
    draft, review = item.draft, dict(item.review) if item.review else None
    sections = (review or {}).get("sections") or {name: s.get("text", "") for name, s in draft["sections"].items()}
    estimates = {name: p.get("value") for name, p in (draft.get("phenotypes") or {}).items()
                 if isinstance(p, dict) and p.get("kind") == "numeric"}
    predecessor = None
    if earlier is not None:
        predecessor = Reference(study_uid, sr_series_uid(study_uid),
                                sent_sop_uid(study_uid, int(earlier["version"]), bool(earlier["verified"])))
    sr = build_report_sr(sections, estimates, study_key=item.study_key, measured=measured,
                         signature=reviews.signature(review), identity=identity,
                         loops=[v["video_key"] for v in draft.get("videos", []) if v.get("video_key")],
                         predecessor=predecessor, comment=left_out_note(draft.get("left_out") or []),
                         sop_instance_uid=sent_sop_uid(study_uid, item.version, item.verified))
    pacs.store(sr)
    return ""


def _measurements(ingest: IngestFolder) -> dict[str, list]:
    """The current vendor measurements of each study (``measurements.csv``), as SR measurement values."""
    if not ingest.measurements.is_file():
        return {}
    df = pd.read_csv(ingest.measurements, dtype={"concept_code": str, "unit": str}, keep_default_na=True)
    return {key: measured_from_rows(group.to_dict("records")) for key, group in df.groupby("study_key")}


def _record(drafts_out: Path, row: dict[str, Any]) -> None:
    """Append one send to ``pacs_sent.jsonl`` (one line, flushed, so a killed run loses no record)."""
    with open(drafts_out / SENT, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
