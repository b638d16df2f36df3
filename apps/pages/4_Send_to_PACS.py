"""Send to PACS: file the signed-off reports of each draft folder into the hospital's PACS as DICOM SR
(``medvid.pacs.push``: re-identified at send time from the ingest's key folder, never written out), with the
destination and each study's send status. Pseudonymous study keys only, as on every page."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from medvid.apps import store, ui
from medvid.errors import MedvidError
from medvid.io.ingest_folder import IngestFolder
from medvid.pacs.address import load_credentials, parse_address
from medvid.pacs.clients import connect
from medvid.pacs.push import push, send_status
from medvid.report import reviews


def main() -> None:
    st.title("Send to PACS")
    cfg, src = ui.config(), ui.current_sources()
    if not src.drafts:
        st.info("No draft folder under the data roots: run `medvid draft … --out DIR` and start the app with "
                "`--data DIR`.")
        return
    destination = parse_address(cfg.pacs_url).describe() if cfg.pacs_url else ""
    if destination:
        st.markdown(f"**Destination:** {ui.plain(destination)}. Only signed-off reports are sent, each version "
                    "once; a report amended after sending goes as a new SR that references the one it replaces.")
    else:
        st.info("No PACS configured: start the app with `pacs_url=URL pacs_ingest=INGEST` (and "
                "`pacs_credentials=FILE`, or the `MEDVID_PACS_*` environment) to send signed reports.")
    table = ui.drafts(src)
    for folder in src.drafts:
        keys = sorted(k for k, d in table.drafts.items() if d.folder == folder)
        st.subheader(ui.plain(folder.name))
        if destination and st.button("Send to PACS", key=f"send::{folder}", type="primary"):
            _send(cfg, folder, destination)
        ui.table(_status(cfg, folder, keys, destination))


def _status(cfg: store.AppConfig, folder: Path, keys: list[str], destination: str) -> pd.DataFrame:
    """One row per study: its review version, whether that version is signed off, and what the PACS got."""
    sent = send_status(folder, destination) if destination else {}
    rows = []
    for key in keys:
        review = reviews.latest(cfg.roots, folder, key)
        version, signed = (int(review["version"]) if review else 0), reviews.signature(review) is not None
        last = sent.get(key)
        if last and (last["version"], last["verified"]) == (version, signed):
            state = f"sent (version {version}, {last['time']})"
        elif signed:
            state = f"to send (version {version})" + (f"; replaces version {last['version']}" if last else "")
        else:
            state = "not signed off" + (f"; version {last['version']} sent" if last else "")
        rows.append({"study": key, "review version": version, "signed off": "yes" if signed else "no",
                     "PACS": state})
    return pd.DataFrame(rows, columns=["study", "review version", "signed off", "PACS"])


def _send(cfg: store.AppConfig, folder: Path, destination: str) -> None:
    if cfg.pacs_ingest is None:
        st.error("No ingest to re-identify the reports: start the app with `pacs_ingest=INGEST` (the ingest the "
                 "drafts came from; `keys_dir=` when its key folder is kept outside).")
        return
    pacs = connect(parse_address(cfg.pacs_url), load_credentials(cfg.pacs_credentials))
    try:
        with st.spinner("Sending signed reports…"):
            summary = push(pacs, folder, IngestFolder(cfg.pacs_ingest, cfg.keys_dir), destination, progress=False)
    except MedvidError as exc:  # nothing sent, the PACS not reachable, credentials refused: say so, keep the table
        st.warning(f"Not sent: {ui.plain(exc)}")
        return
    message = (f"Sent {summary['sent']} report(s); {summary['already_sent']} already in the PACS; "
               f"{summary['not_signed_off']} not signed off.")
    if summary["errors"]:
        st.warning(message + f" {summary['errors']} not sent: {ui.plain(summary['errors_by_reason'])}.")
    else:
        st.success(message)


ui.page("Send to PACS", main)
