"""Pull studies from a PACS into an ordinary export folder (``DIR/<study>/<series>/<instance>.dcm``) that
``medvid ingest DIR`` reads as it reads any export.

Resumable: an instance already in ``DIR`` is not fetched again, and each file appears only complete (written
beside its place, then renamed). Fetches run on a bounded pool. Identifiers (accession numbers, patient
IDs) come from files, never the command line, and no identifier reaches a log or the summary: it counts.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Sequence

from medvid.errors import MedvidError
from medvid.pacs.clients import InstanceRef, Pacs, PacsError
from medvid.utils import atomic_path, progress as progress_bar

log = logging.getLogger("medvid")

MARKER = ".medvid-pull.json"  # a dot file: ingest skips it
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def study_queries(study_date: str = "", modality: str = "", accessions: Sequence[str] = (),
                  patients: Sequence[str] = ()) -> list[dict[str, str]]:
    """The QIDO / C-FIND study queries: one per accession number or patient ID (or one without either), each
    with the date range (DICOM ``YYYYMMDD-YYYYMMDD``) and modality filters."""
    if study_date and not re.fullmatch(r"(\d{8})?-?(\d{8})?", study_date):
        raise MedvidError(f"study_date must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, got {study_date!r}")
    base = {k: v for k, v in (("StudyDate", study_date), ("ModalitiesInStudy", modality)) if v}
    if not accessions and not patients:
        return [base]
    return ([{**base, "AccessionNumber": a} for a in accessions] + [{**base, "PatientID": p} for p in patients])


def read_identifiers(path: str) -> list[str]:
    """One identifier per line (blank lines and ``#`` comments skipped)."""
    if not path:
        return []
    file = Path(path)
    if not file.is_file():
        raise MedvidError(f"identifier list not found: {file}")
    lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def instance_path(out: Path, ref: InstanceRef) -> Path:
    """Where an instance lives in the export; a UID that is not a UID (``../x``) is refused."""
    for uid in (ref.study, ref.series, ref.sop):
        if not (uid and len(uid) <= 64 and _UID.match(uid)):
            raise PacsError("bad_uid", "the PACS answered an invalid UID")
    return out / ref.study / ref.series / f"{ref.sop}.dcm"


def claim_folder(out: Path, source: str) -> None:
    """Pull into ``out`` only when it is empty, absent or an earlier pull's folder from the same PACS
    (:func:`medvid.runs.claim_out`; the record ``MARKER`` is a dot file, which ingest skips)."""
    from medvid.runs import claim_out

    claim_out(out, "pacs pull", {"source": hashlib.sha256(source.encode()).hexdigest()[:16]}, record=MARKER,
              restart="a new out= folder")


def pull(pacs: Pacs, queries: Iterable[dict[str, str]], out: str | Path, source: str, workers: int = 4,
         progress: bool = True) -> dict[str, Any]:
    """Fetch every instance of the studies the ``queries`` match into ``out``; returns counts only."""
    out = Path(out)
    studies = list(dict.fromkeys(uid for q in queries for uid in pacs.find_studies(q)))  # reachability first
    claim_folder(out, source)
    failed: Counter[str] = Counter()
    refs: list[InstanceRef] = []
    for study in studies:
        try:
            found = pacs.instances(study)
        except PacsError as exc:
            if exc.reason in ("unreachable", "credentials"):
                raise
            failed[f"study_{exc.reason}"] += 1
            continue
        if not found:
            failed["study_gone"] += 1  # deleted since the query
        refs += found
    todo, present = [], 0
    for ref in refs:
        try:
            path = instance_path(out, ref)
        except PacsError as exc:
            failed[exc.reason] += 1
            continue
        if path.exists():
            present += 1
        else:
            todo.append((ref, path))
    fetched = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            progress_bar(total=len(todo), desc="pacs pull", unit="instance", enabled=progress) as bar:
        futures = [pool.submit(_fetch_one, pacs, ref, path) for ref, path in todo]
        for future in as_completed(futures):
            bar.update()
            try:
                future.result()
                fetched += 1
            except PacsError as exc:
                if exc.reason in ("unreachable", "credentials"):
                    for f in futures:
                        f.cancel()
                    raise PacsError(exc.reason, f"{exc} after {fetched} instance(s); rerun to continue") from exc
                failed[exc.reason] += 1
    log.info("pacs pull: %d studies, %d instances (%d fetched, %d already present, %d failed)", len(studies),
             len(refs), fetched, present, sum(failed.values()))
    return {"out": str(out), "studies": len(studies), "instances": len(refs), "fetched": fetched,
            "already_present": present, "failed": dict(failed)}


def _fetch_one(pacs: Pacs, ref: InstanceRef, path: Path) -> None:
    ds = pacs.fetch(ref)
    if str(ds.get("SOPInstanceUID", "")) != ref.sop:
        raise PacsError("mismatch", "the PACS returned another instance than the one asked for")
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
