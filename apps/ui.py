"""Streamlit helpers shared by the review app's pages: access gate, config, cached loaders, error guard, navigation."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from medvid.apps import access, store
from medvid.report import reviews as review_store
from medvid.errors import MedvidError
from medvid.io.ingest_folder import IngestFolder

log = logging.getLogger("medvid.app")

STUDY_PAGE = "pages/2_Study.py"
LIST_PAGE = "pages/1_Echo_studies.py"


ADMITTED = "medvid_token"  # session_state: the launch token this browser session presented


def admitted() -> bool:
    """The one gate every page passes before reading any data: Host / Origin on an allowed name (DNS
    rebinding) and this launch's token, given once per session as ``?token=`` and then remembered."""
    if not access.headers_ok(st.context.headers, config().hosts):
        log.warning("session refused: Host or Origin is not an allowed name")
        st.error("Refused: this page was opened under a host name the review app does not serve. Open the "
                 "address `medvid app` printed.")
        return False
    expected = access.launch_token()
    for given in (st.session_state.get(ADMITTED), st.query_params.get("token")):
        if access.token_ok(given, expected):
            st.session_state[ADMITTED] = given
            return True
    st.error("This app needs its access token: open the address `medvid app` printed when it started "
             "(it ends in `?token=…`; a new token is made at every start).")
    return False


def page(title: str, body: Callable[[], None]) -> None:
    """Run a page body behind the access gate; any failure becomes a clear in-page message, never a traceback."""
    st.set_page_config(page_title=f"medvid · {title}", layout="wide")
    try:
        if admitted():
            body()
    except ScriptControlException:  # st.rerun / st.switch_page / st.stop
        raise
    except (MedvidError, OSError) as exc:
        st.error(f"{title}: {plain(exc)}" if isinstance(exc, MedvidError) else
                 f"{title}: a file could not be read ({type(exc).__name__}); see the server log.")
        log.exception("page %s failed", title)
    except Exception as exc:  # noqa: BLE001 - the page must show a message, not a traceback
        st.error(f"{title}: unexpected error ({type(exc).__name__}); see the server log.")
        log.exception("page %s failed", title)


def config() -> store.AppConfig:
    return store.AppConfig.from_env()


def _stamp(paths: list[Path]) -> tuple:
    """Modification times that key the caches (a rewritten file invalidates them)."""
    return tuple((str(p), p.stat().st_mtime_ns if p.exists() else 0) for p in paths)


@st.cache_data(show_spinner=False, ttl=30)
def sources(data: tuple[str, ...]) -> store.Sources:
    return store.discover([Path(p) for p in data])


def current_sources() -> store.Sources:
    cfg = config()
    found = sources(tuple(str(p) for p in cfg.data))
    for missing in found.missing:
        st.warning("A data root given at start is not a folder; it is skipped.")
        log.warning("data root is not a folder: %s", missing)
    return found


@st.cache_data(show_spinner=False)
def _videos(ingests: tuple[str, ...], stamp: tuple) -> pd.DataFrame:
    return store.read_videos([Path(p) for p in ingests])


def videos(src: store.Sources) -> pd.DataFrame:
    return _videos(tuple(map(str, src.ingests)), _stamp([IngestFolder(p).videos for p in src.ingests]))


@st.cache_data(show_spinner=False)
def _measurements(roots: tuple[str, ...], ingests: tuple[str, ...], study_key: str,
                  stamp: tuple) -> tuple[pd.DataFrame, bool]:
    return store.read_measurements([Path(r) for r in roots], [Path(p) for p in ingests], study_key)


def measurements(src: store.Sources, study_key: str) -> tuple[pd.DataFrame, bool]:
    """A study's vendor measurements (``store.read_measurements``), re-read when a ``measurements.csv`` changes."""
    return _measurements(tuple(map(str, config().roots)), tuple(map(str, src.ingests)), study_key,
                         _stamp([IngestFolder(p).measurements for p in src.ingests]))


@st.cache_data(show_spinner=False)
def _drafts(folders: tuple[str, ...], stamp: tuple) -> store.DraftTable:
    return store.read_drafts([Path(p) for p in folders])


def drafts(src: store.Sources) -> store.DraftTable:
    table = _drafts(tuple(map(str, src.drafts)),
                    _stamp([p / n for p in src.drafts for n in ("drafts.jsonl", "errors.jsonl")]))
    if table.bad_lines:
        st.warning(f"{len(table.bad_lines)} line(s) of drafts.jsonl could not be read and are skipped: "
                   + "; ".join(table.bad_lines[:5]))
    return table


@st.cache_data(show_spinner=False)
def _reviews(keys: tuple[tuple[str, str], ...], roots: tuple[str, ...], stamp: tuple) -> dict[str, dict | None]:
    return {k: review_store.latest([Path(r) for r in roots], Path(folder), k) for k, folder in keys}


def reviews(table: store.DraftTable) -> dict[str, dict | None]:
    """Saved reviews of every drafted study; re-read when a ``reviewed/`` folder changes (atomic writes
    rename into it, which updates its modification time)."""
    keys = tuple(sorted((k, str(d.folder)) for k, d in table.drafts.items()))
    folders = sorted({Path(f) / "reviewed" for _, f in keys})
    return _reviews(keys, tuple(map(str, config().roots)), _stamp(folders))


def studies(src: store.Sources) -> tuple[pd.DataFrame, store.DraftTable, dict[str, dict | None]]:
    """The study table with statuses, the drafts and the reviews."""
    table = drafts(src)
    revs = reviews(table)
    return store.study_table(videos(src), table, revs), table, revs


def session_token() -> str:
    """The token this session was admitted with, for links that open a new tab (a new session)."""
    return str(st.session_state.get(ADMITTED, ""))


LIST_PARAMS = ("q", "status", "list", "pheno", "op", "value", "reviewer")  # the worklist's state in the address
LISTS = ("drafted", "not drafted")


def list_params() -> dict[str, str]:
    """The worklist's search, filters and reviewer from the address (they survive a reload and travel with
    the study page's address, so next/previous follow the list the reader chose)."""
    return {k: str(st.query_params[k]) for k in LIST_PARAMS if st.query_params.get(k)}


def keep_params(values: dict[str, str]) -> None:
    """Write the worklist state into the address (blank values are dropped)."""
    for k in LIST_PARAMS:
        v = values.get(k, "")
        if v and st.query_params.get(k) != v:
            st.query_params[k] = v
        elif not v and k in st.query_params:
            del st.query_params[k]


def ordered_studies(df: pd.DataFrame, table: store.DraftTable, params: dict[str, str]) -> pd.DataFrame:
    """The worklist in reading order (``store.worklist``), restricted to the chosen list (drafted studies, or
    those not drafted) and to the search and filters in ``params``."""
    listed = store.worklist(df, table)
    drafted = listed["study"].isin(set(table.drafts))
    listed = listed[~drafted if params.get("list") == LISTS[1] else drafted]
    texts = {k: " ".join(str(s.get("text") or "") for s in d.sections.values()) for k, d in table.drafts.items()}
    try:
        value = float(params["value"]) if params.get("value") else None
    except ValueError:
        value = None
    statuses = [s for s in params.get("status", "").split(",") if s in store.STATUSES]
    return store.filter_studies(listed, params.get("q", ""), statuses, params.get("pheno") or None,
                                ">=" if params.get("op") == "≥" else "<", value, texts)


def open_study(key: str) -> None:
    """Go to the study page for ``key``, carrying the worklist state (next/previous follow the chosen list)."""
    st.session_state["study"] = key
    st.switch_page(STUDY_PAGE, query_params={**list_params(), "study": key, **_token_param()})


def _token_param() -> dict[str, str]:
    """The session's token kept in the address, so that a reload of the page opens it again."""
    return {"token": session_token()} if session_token() else {}


_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark: CommonMark shows "\x" as x itself


def plain(value: object) -> str:
    """Text read from a file, safe inside Streamlit's Markdown-rendering elements (captions, messages, labels,
    table cells): every ASCII punctuation mark backslash-escaped and line breaks made spaces, so no link, image,
    colour directive, emphasis or HTML can come of it. Report text itself is shown with ``st.text`` instead."""
    return _PUNCT.sub(r"\\\1", " ".join(str(value).split()))


def table(df: pd.DataFrame) -> None:
    """``st.table`` (which renders Markdown in its cells) with every text cell and heading made ``plain``."""
    shown = df.map(lambda v: plain(v) if isinstance(v, str) else v)
    shown.columns = [plain(c) for c in shown.columns]
    shown.index = [plain(i) if isinstance(i, str) else i for i in shown.index]
    st.table(shown)


def fmt(value: object, digits: int = 2) -> str:
    """A number for display; '—' for missing."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
