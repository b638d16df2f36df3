"""Echo studies: the worklist. Drafted studies in reading order (priority flags, then the oldest draft), studies
not drafted in a list of their own; status counts; phenotypes as calls; search over the findings the drafts
affirm (negation-aware); search, filters and list kept in the address (they survive a reload)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from medvid.apps import store, ui

PAGE_SIZE = 50


def main() -> None:
    st.title("Echo studies")
    src = ui.current_sources()
    if not (src.ingests or src.drafts):
        st.info("No echo studies under the data roots: run `medvid ingest` (and `medvid draft`) and start the app "
                "with `--data` pointing at their output.")
        return
    df, table, _ = ui.studies(src)
    if df.empty:
        st.info("No studies: the ingest holds no cine loops and no draft was found.")
        return
    counts = df["status"].value_counts()
    st.markdown(" · ".join(f"**{int(counts.get(s, 0))}** {s}" for s in ("draft", "edited", "signed off", "error"))
                + f" · **{int(counts.get('no draft', 0))}** not drafted")
    params = _controls(df)
    shown = ui.ordered_studies(df, table, params)
    st.caption(f"{len(shown)} of {len(df)} studies")
    if shown.empty:
        st.info("No study matches the search and filters.")
        return
    order = shown["study"].tolist()
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    chosen = c1.selectbox("Study", order, key="list_choice")
    if c2.button("Open study", type="primary", key="list_open", shortcut="Alt+O"):
        ui.open_study(chosen)
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page_no = st.number_input("Page", 1, pages, 1, key="list_page") if pages > 1 else 1
    part = shown.iloc[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
    st.markdown(_table(_display(part, table), ui.session_token()), unsafe_allow_html=False)


def _controls(df: pd.DataFrame) -> dict[str, str]:
    """Search and filter widgets, first filled from the address; their values written back to it."""
    params = ui.list_params()
    phenos = [c for c in df.columns if c not in ("study", "loops", "views", "status")
              and pd.to_numeric(df[c], errors="coerce").notna().any()]
    for key, name, default in (("list_query", "q", ""), ("list_which", "list", ui.LISTS[0]),
                               ("list_pheno", "pheno", "(any)"), ("list_op", "op", "<")):
        st.session_state.setdefault(key, params.get(name, default))
    st.session_state.setdefault("list_status", [s for s in params.get("status", "").split(",") if s in store.STATUSES])
    st.session_state.setdefault("list_value", _number(params.get("value"), 40.0))
    if st.session_state["list_which"] not in ui.LISTS:
        st.session_state["list_which"] = ui.LISTS[0]
    if st.session_state["list_pheno"] not in ("(any)", *phenos):
        st.session_state["list_pheno"] = "(any)"
    if st.session_state["list_op"] not in ("<", "≥"):
        st.session_state["list_op"] = "<"
    st.radio("List", ui.LISTS, key="list_which", horizontal=True, label_visibility="collapsed",
             format_func=lambda s: "Drafted (worklist)" if s == ui.LISTS[0] else "Not drafted (no draft or error)")
    c1, c2, c3, c4, c5 = st.columns([3, 3, 2, 1, 1])
    c1.text_input("Search (study key, or a finding the draft states: \"effusion\" skips \"No effusion\")",
                  key="list_query")
    c2.multiselect("Status", store.STATUSES, key="list_status")
    c3.selectbox("Phenotype", ["(any)"] + phenos, key="list_pheno")
    c4.selectbox("Is", ["<", "≥"], key="list_op")
    c5.number_input("Value", key="list_value")
    pheno = st.session_state["list_pheno"]
    values = {"q": st.session_state["list_query"].strip(), "status": ",".join(st.session_state["list_status"]),
              "list": "" if st.session_state["list_which"] == ui.LISTS[0] else st.session_state["list_which"],
              "pheno": "" if pheno == "(any)" else pheno,
              "op": st.session_state["list_op"] if pheno != "(any)" else "",
              "value": str(st.session_state["list_value"]) if pheno != "(any)" else "",
              "reviewer": params.get("reviewer", "")}
    ui.keep_params(values)
    return values


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _display(part: pd.DataFrame, table: store.DraftTable) -> pd.DataFrame:
    """Shown columns: key, priority flags, status, loops, views, then each phenotype as a call."""
    out = part[["study", "flags", "status", "loops", "views"]].copy()
    names = sorted({n for k in part["study"] if (d := table.drafts.get(k))
                    for n in (d.data.get("phenotypes") or {})})
    for name in names:
        out[name] = [store.phenotype_call(((table.drafts[k].data.get("phenotypes") or {}).get(name)))
                     if k in table.drafts else "—" for k in part["study"]]
    return out


def _table(df: pd.DataFrame, token: str) -> str:
    """A markdown table (real HTML rows: readable by screen readers and the browser test); keys (checked by
    ``medvid.utils.valid_key``) link to the study (with the session's token: a link opens a new tab, a new session);
    every other cell and heading is ``ui.plain`` text."""
    head = "| " + " | ".join(ui.plain(c) for c in df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = []
    for _, r in df.iterrows():
        cells = [f"[{r['study']}](Study?study={r['study']}&token={token})"]
        cells += [ui.fmt(r[c], 1) if isinstance(r[c], float) else ui.plain(r[c]) for c in df.columns[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows)


ui.page("Echo studies", main)
