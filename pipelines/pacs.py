"""`medvid pacs pull URL --out DIR`: studies from a PACS (DICOMweb or DIMSE) into an ordinary export folder,
which `medvid ingest DIR` then reads. `medvid pacs push DRAFTS_OUT URL --ingest INGEST`: signed-off reports back
into the PACS as SRs under each patient's own study. The work is ``medvid.pacs``; this job reads settings and
wires it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvid.config import setting
from medvid.errors import MedvidError


@dataclass
class Config:
    action: str = setting("pull", "pull or push (set by the command)")
    url: str = setting("", "PACS: http(s)://host/dicom-web (DICOMweb) or dimse://AET@host:port (DIMSE)")
    out: str = setting("", "pull: export folder to write (DIR/<study>/<series>/<instance>.dcm)")
    credentials: str = setting("", "JSON file {username, password} or {token}; blank: MEDVID_PACS_USER + "
                                   "MEDVID_PACS_PASSWORD or MEDVID_PACS_TOKEN from the environment (never argv)")
    ae_title: str = setting("MEDVID", "DIMSE: our AE title (the PACS must know it for C-GET)")
    study_date: str = setting("", "pull: study date YYYYMMDD or range YYYYMMDD-YYYYMMDD; blank = any")
    modality: str = setting("US", "pull: modality in study; blank = any")
    accessions: str = setting("", "pull: file with one accession number per line (identifiers never on the "
                                  "command line)")
    patients: str = setting("", "pull: file with one patient ID per line")
    drafts: str = setting("", "push: the medvid draft output folder whose reviewed reports are sent")
    ingest: str = setting("", "push: the ingest folder the drafts came from (its key folder re-identifies studies)")
    keys_dir: str = setting("", "push: the ingest's key folder when it was kept outside the ingest (keys_dir)")
    include_unverified: bool = setting(False, "push: also send reports nobody signed off, as UNVERIFIED")
    workers: int = setting(4, "instances fetched at once")
    timeout: float = setting(60.0, "seconds to wait for the PACS per call")
    verify_tls: bool = setting(True, "https: verify the server's certificate")
    ca_bundle: str = setting("", "https: CA bundle file for a hospital's own certificate authority")
    progress: bool = setting(True, "progress bar on stderr")


def run(cfg: Config) -> dict[str, Any]:
    from medvid.pacs.address import check_aet, load_credentials, parse_address
    from medvid.pacs.clients import connect

    if cfg.action not in ("pull", "push"):
        raise MedvidError(f"action must be pull or push, got {cfg.action!r}")
    if not cfg.url:
        raise MedvidError(f"pacs {cfg.action} needs the PACS URL")
    if cfg.workers < 1 or cfg.timeout <= 0:
        raise MedvidError("workers must be >= 1 and timeout > 0")
    address = parse_address(cfg.url)
    verify = cfg.ca_bundle or cfg.verify_tls
    if cfg.action == "push":
        from medvid.io.ingest_folder import IngestFolder
        from medvid.pacs.push import outgoing, push

        if not cfg.drafts or not cfg.ingest:
            raise MedvidError("pacs push needs DRAFTS_OUT, the PACS URL and --ingest INGEST")
        folder = IngestFolder(cfg.ingest, cfg.keys_dir or None)
        folder.identities()  # the key folder is there and readable before any connection
        outgoing(Path(cfg.drafts), cfg.include_unverified)  # the drafts folder is one
        pacs = connect(address, load_credentials(cfg.credentials), check_aet(cfg.ae_title), verify, cfg.timeout)
        return push(pacs, cfg.drafts, folder, address.describe(), cfg.include_unverified, cfg.progress)

    from medvid.pacs.pull import pull, read_identifiers, study_queries

    if not cfg.out:
        raise MedvidError("pacs pull needs --out DIR")
    queries = study_queries(cfg.study_date, cfg.modality, read_identifiers(cfg.accessions),
                            read_identifiers(cfg.patients))
    pacs = connect(address, load_credentials(cfg.credentials), check_aet(cfg.ae_title), verify, cfg.timeout)
    return pull(pacs, queries, cfg.out, address.describe(), cfg.workers, cfg.progress)
