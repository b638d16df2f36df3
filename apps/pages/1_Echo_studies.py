"""Echo studies: every ingested or drafted study with loops, views and draft status; search and filter."""
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
    phenos = [c for c in df.columns if c not in ("study", "loops", "views", "status")
              and pd.to_numeric(df[c], errors="coerce").notna().any()]
    c1, c2, c3, c4, c5 = st.columns([3, 3, 2, 1, 1])
    query = c1.text_input("Search (study key or draft text)", key="list_query")
    statuses = c2.multiselect("Status", store.STATUSES, key="list_status")
    phenotype = c3.selectbox("Phenotype", ["(any)"] + phenos, key="list_pheno")
    op = c4.selectbox("Is", ["<", "≥"], key="list_op")
    value = c5.number_input("Value", value=40.0, key="list_value")
    texts = {k: " ".join(str(s.get("text") or "") for s in d.sections.values()) for k, d in table.drafts.items()}
    shown = store.filter_studies(df, query, statuses, None if phenotype == "(any)" else phenotype,
                                 "<" if op == "<" else ">=", value, texts)
    counts = df["status"].value_counts()
    st.caption(f"{len(shown)} of {len(df)} studies · " + " · ".join(f"{s}: {int(counts.get(s, 0))}"
                                                                     for s in store.STATUSES))
    if shown.empty:
        st.info("No study matches the search and filters.")
        return
    order = shown["study"].tolist()
    c1, c2 = st.columns([4, 1])
    chosen = c1.selectbox("Study", order, key="list_choice")
    c2.markdown("&nbsp;")
    if c2.button("Open study", type="primary", key="list_open"):
        ui.open_study(chosen, order)
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page_no = st.number_input("Page", 1, pages, 1, key="list_page") if pages > 1 else 1
    part = shown.iloc[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
    cols = ["study", "loops", "views", "status", *phenos]
    st.markdown(_table(part[cols], ui.session_token()), unsafe_allow_html=False)


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
