"""medvid review app (``medvid app --data DIR``): home page with what was found under the data roots.

Pages: Echo studies (list, search, filter) → Study (loops, draft, review, export); Surgical video
(zero-shot phase and tool results). See docs/app.md.
"""
from __future__ import annotations

import streamlit as st

from medvid.apps import ui


def main() -> None:
    st.title("medvid review")
    cfg = ui.config()
    if not cfg.data:
        st.error("No data roots: start the app with `medvid app --data DIR` (an ingest, draft or zero-shot "
                 "output folder, or a folder above them).")
        return
    src = ui.current_sources()
    st.markdown(
        f"- **{len(src.ingests)}** ingest folder(s), **{len(src.drafts)}** draft folder(s), "
        f"**{len(src.zero_shots)}** zero-shot output(s), **{len(src.video_roots)}** surgical video root(s)\n"
        f"- loops: {'rendered from the DICOM root' if cfg.dicom_roots else 'not shown (no --dicom-root given)'}")
    if not (src.ingests or src.drafts or src.zero_shots):
        st.info("Nothing to review yet: no `videos.parquet`, `drafts.jsonl` or zero-shot `predictions/` "
                "under the data roots.")
    st.page_link(ui.LIST_PAGE, label="Echo studies", icon="🫀")
    st.page_link("pages/3_Surgical_video.py", label="Surgical video", icon="🎥")
    st.caption("Pseudonymous keys only. Loops are shown with everything outside the imaging sector blanked.")


ui.page("Home", main)
