"""One echo study in two panes that scroll on their own (the loops stay in view while the sections are read).
Left: the main viewer (``apps/viewer.py``: one loop large, or two side by side synced by cardiac cycle, another
of this study or the same view of another study of the patient), thumbnails grouped by view, attention per section
named by view. Right: the draft (editable; read-only once signed, amend = a new version), conflict flags,
provenance, model estimates and calls, review (save / sign off / sign off and next), export, vendor measurements
and the patient's other studies."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from medvid.apps import store, ui
from medvid.apps import viewer as viewer_page
from medvid.report import reviews
from medvid.errors import MedvidError
from medvid.io.render import RenderError, render_cached
from medvid.report.sr import write_report_sr
from medvid.utils import atomic_write_text


def main() -> None:
    cfg, src = ui.config(), ui.current_sources()
    df, table, revs = ui.studies(src)
    keys = df["study"].tolist() if not df.empty else []
    if not keys:
        st.info("No echo studies under the data roots.")
        st.page_link(ui.LIST_PAGE, label="Back to the study list")
        return
    key = _requested(keys)
    if key is None:
        return
    params = {k: v for k, v in ui.list_params().items() if k != "reviewer"}
    # the list as it was when this tab opened it: signing a study (which moves it down the worklist) keeps
    # next / previous where the reader is
    order = st.session_state.setdefault(f"order::{sorted(params.items())}",
                                        ui.ordered_studies(df, table, params)["study"].tolist())
    if key not in order:  # opened from the other list or by its address: step through all studies
        order = keys
    _navigation(key, order)
    draft, review = table.drafts.get(key), revs.get(key)
    status = store.study_status(key, table, review)
    st.title(f"Study {key}")
    st.markdown(f"**Status:** {status}")
    # one slot each, filled or not: the elements below keep their places, so a Save does not remount the viewer
    version_slot, flash_slot = st.empty(), st.empty()
    if review:  # names and times come from a file: plain text, never Markdown
        version_slot.text(f"Review version {review['version']}, "
                          f"{'signed off' if review.get('status') == 'signed_off' else 'saved'}"
                          f" by {review.get('reviewer')} at {review.get('time')}")
    if flash := st.session_state.pop("flash", None):  # a toast is seen wherever the page is scrolled
        st.toast(flash)
        flash_slot.success(flash)
    everyone = ui.videos(src)
    loops = everyone[everyone["study_key"] == key].reset_index(drop=True)
    views = _views(draft, loops)
    left, right = st.columns([2, 3], gap="medium")
    with right.container(height=PANE_PX, key="report_pane"):  # drawn first: on screen before any loop renders
        _draft(cfg, key, draft, review, table, loops, order, views)
        _measurements(src, key, loops, views)
        _others(everyone, key, table, revs)
    with left.container(height=PANE_PX, key="loops_pane"):
        _loops(cfg, src, key, draft, loops, views, everyone)


def _requested(keys: list[str]) -> str | None:
    """The study in ``?study=`` (validated against the known keys), else the session's, else the first."""
    asked = st.query_params.get("study")
    if asked is not None:
        if not store.valid_key(asked) or asked not in set(keys):
            st.error("The address names no known study (keys look like st_…). Pick one from the list.")
            st.page_link(ui.LIST_PAGE, label="Back to the study list")
            return None
        key = asked
    else:
        key = st.session_state.get("study") if st.session_state.get("study") in set(keys) else keys[0]
    st.session_state["study"] = key
    if st.query_params.get("study") != key:
        st.query_params["study"] = key
    return key


def _navigation(key: str, order: list[str]) -> None:
    i = order.index(key) if key in order else 0
    c1, c2, c3, c4 = st.columns([2, 2, 1, 2], vertical_alignment="center")
    prev_key = order[i - 1] if i > 0 else None
    next_key = order[i + 1] if i + 1 < len(order) else None
    if c1.button("← Previous study", disabled=prev_key is None, key="nav_prev", shortcut="Alt+P", width="stretch"):
        _go(prev_key)
    if c2.button("Next study →", disabled=next_key is None, key="nav_next", shortcut="Alt+N", width="stretch"):
        _go(next_key)
    c3.page_link(ui.LIST_PAGE, label="Study list")
    c4.caption(f"Study {i + 1} of {len(order)}")


def _go(key: str) -> None:
    st.session_state["study"] = key
    st.query_params["study"] = key
    st.rerun()


# --------------------------------------------------------------------------- draft, review, export


def _draft(cfg: store.AppConfig, key: str, draft: store.Draft | None, review: dict | None,
           table: store.DraftTable, loops: pd.DataFrame, order: list[str], views: dict[str, str]) -> None:
    st.subheader("Report")
    if draft is None:
        if key in table.errors:
            reasons = sorted({ui.plain(e.get("reason", "unknown")) for e in table.errors[key]})
            st.error(f"Drafting failed for this study: {', '.join(reasons)} (see the draft job's errors.jsonl).")
        else:
            st.info("No draft for this study yet: run `medvid draft` on its ingest.")
        return
    foreign = {v.get("video_key") for v in draft.data.get("videos") or []} - set(loops["video_key"])
    if foreign:
        st.warning(f"This draft lists {len(foreign)} loop(s) that are not in the ingest: it was made from other "
                   "data (another ingest or model run). Check it before signing off.")
    _left_out(draft)
    if review is not None and review.get("draft_sha256") != draft.sha256:
        st.warning("The saved review was made on another version of this draft (it was drafted again since, "
                   "e.g. by another model). Compare before signing off.")
    model = (draft.data.get("provenance") or {}).get("model") or {}
    if model:
        st.caption(f"Drafted by model {ui.plain(model.get('name', '?'))} "
                   f"({ui.plain(str(model.get('fingerprint', ''))[:12])})")
    final = reviews.is_final(review)
    amending = final and st.toggle("Amend this signed report (a new version with a reason)", key=f"amend::{key}")
    if final and not amending:
        st.info(f"Signed off (version {review['version']}): read-only. Amend it to make a new version.")
    saved = (review or {}).get("sections") or {}
    for name, sec in draft.sections.items():
        original = str(sec.get("text") or "")
        st.text_area(ui.plain(name), value=str(saved.get(name, original)), key=f"sec::{key}::{name}", height="content",
                     disabled=final and not amending)
        if saved.get(name, original) != original:
            st.caption("edited (draft text and changes in the provenance below)")
        _conflict(sec)
        with st.expander(f"Provenance · {ui.plain(name)}"):
            _provenance(sec, original, str((review or {}).get("diff", {}).get(name) or ""), views)
    _phenotypes(draft)
    _review_controls(cfg, key, draft, review, order, amending)


def _conflict(sec: dict) -> None:
    """A section whose text still contradicts a phenotype call (the draft's ``conflict``): a warning naming the
    call, with the agreeing alternative text when the draft offers one."""
    conflict = sec.get("conflict")
    if not isinstance(conflict, dict):
        return
    names = conflict.get("phenotypes") or [conflict.get("phenotype")]
    st.warning(f"Conflict: this text disagrees with the call of {ui.plain(', '.join(str(n) for n in names))} "
               f"({'positive' if conflict.get('call') == 1 else 'negative'}). Check before signing off.")
    if conflict.get("alternative"):
        st.caption("An alternative that agrees with the call:")
        st.text(str(conflict["alternative"]))  # report text is plain text, never Markdown


MAX_LEFT_OUT = 50  # rows of the left-out table (a hostile draft line can list any number)


def _left_out(draft: store.Draft) -> None:
    """Say which loops the draft was made without, and why (the draft's ``left_out``)."""
    left = draft.left_out
    if not left:
        return
    st.warning(f"{len(left)} loop(s) of this study were left out of this draft because they could not be read; "
               "the draft was made from the other loops. Check those views before signing off.")
    ui.table(pd.DataFrame(left[:MAX_LEFT_OUT], columns=["loop", "reason", "detail"]))
    if len(left) > MAX_LEFT_OUT:
        st.caption(f"… and {len(left) - MAX_LEFT_OUT} more.")


def _provenance(sec: dict, original: str, diff: str, views: dict[str, str]) -> None:
    vids = sorted(sec.get("videos") or [], key=lambda v: -(v.get("weight") or 0))
    if vids:
        names = store.loop_names(views)
        st.markdown("Contributing loops (attention weight, highest first):")
        ui.table(pd.DataFrame([{"loop": names.get(str(v.get("video_key")), str(v.get("video_key"))),
                                "weight": ui.fmt(v.get("weight"))} for v in vids[:6]]))
    nbrs = sec.get("neighbours") or []
    if nbrs:
        st.markdown("Neighbour studies the text came from (cosine similarity):")
        ui.table(pd.DataFrame([{"study": str(n.get("study_key")), "similarity": ui.fmt(n.get("similarity"), 3)}
                               for n in nbrs[:5]]))
    st.caption("Draft text:")
    st.text(original)  # report text is plain text, never Markdown
    if diff:
        st.caption("Changes in the saved review (unified diff):")
        st.text(diff)


def _phenotypes(draft: store.Draft) -> None:
    """Model outputs as calls and labelled estimates (never as measurements)."""
    phen, finds = draft.data.get("phenotypes") or {}, draft.data.get("findings") or {}
    if not (phen or finds):
        return
    st.subheader("Model estimates and calls")
    st.caption("Estimated by the model from similar studies (kNN) or from the loops (zero-shot): not measured.")
    rows = [{"phenotype": n, "method": str(p.get("method", default)), "call or estimate": store.phenotype_call(p),
             "neighbours with label": ui.fmt(p.get("n")) if default == "knn" else "—"}
            for default, entries in (("knn", phen), ("zero_shot", finds))
            for n, p in entries.items() if isinstance(p, dict)]
    ui.table(pd.DataFrame(rows))


def _review_controls(cfg: store.AppConfig, key: str, draft: store.Draft, review: dict | None, order: list[str],
                     amending: bool) -> None:
    st.subheader("Review")
    version = review["version"] if review else 0
    base = st.session_state.setdefault(f"base::{key}", version)  # the version this tab's text boxes were loaded from
    read_only = reviews.writable(cfg.roots, draft.folder)
    if read_only:
        st.warning(read_only[0].upper() + read_only[1:] + ".")
    if base != version:
        st.warning(f"This review was saved again (now version {version}) since this page loaded version {base}: "
                   "saving here is refused until you load the latest version.")
    if st.button("Load the latest version", key="reload", disabled=base == version):
        _forget_edits(key, draft)
        st.rerun()
    final = reviews.is_final(review)
    reason = st.text_input("Reason for the amendment", key=f"reason::{key}", max_chars=500) if amending else ""
    st.session_state.setdefault("reviewer", ui.list_params().get("reviewer", ""))
    reviewer = st.text_input("Reviewer name", key="reviewer",
                             help="Recorded in the review and as the DICOM SR observer (a DICOM person name: "
                                  "at most 64 characters, Family^Given); kept in the address")
    name_error = None
    if reviewer.strip():
        try:
            reviews.check_reviewer(reviewer)
        except MedvidError as exc:
            name_error = str(exc)
            st.error(ui.plain(name_error))
    if name_error is None and st.query_params.get("reviewer", "") != reviewer.strip():
        ui.keep_params({**ui.list_params(), "reviewer": reviewer.strip()})
    blocked = bool(read_only) or name_error is not None or (final and not amending)
    nxt = order[order.index(key) + 1] if key in order and order.index(key) + 1 < len(order) else None
    c1, c2, c3, c4 = st.columns(4)
    save = c1.button("Save amendment" if final else "Save", key="save", type="secondary", shortcut="Alt+S",
                     disabled=blocked)
    sign = c2.button("Sign off amendment" if final else "Sign off", key="sign_off", type="primary",
                     shortcut="Alt+Shift+S", disabled=blocked)
    sign_next = c3.button("Sign off and next", key="sign_next", type="primary", shortcut="Alt+Enter",
                          disabled=blocked or nxt is None, help=None if nxt else "last study of the list")
    export = c4.button(f"Export version {version}: text + DICOM SR" if review else "Export text + DICOM SR",
                       key="export", disabled=review is None or bool(read_only),
                       help="Save the review first" if review is None else None)
    if save or sign or sign_next:
        loaded = (review or {}).get("sections") or {}
        texts = {n: st.session_state.get(f"sec::{key}::{n}", str(loaded.get(n, s.get("text") or "")))
                 for n, s in draft.sections.items()}
        if save and all(texts[n] == str(loaded.get(n, s.get("text") or "")) for n, s in draft.sections.items()):
            st.session_state["flash"] = "Nothing saved: no section was changed."
            st.rerun()
        try:
            saved = reviews.save(cfg.roots, draft, texts, reviewer, sign_off=sign or sign_next, base_version=base,
                                 reason=reason)
        except MedvidError as exc:
            st.error(ui.plain(exc))
            return
        st.session_state[f"base::{key}"] = saved["version"]
        st.session_state["flash"] = (f"{'Signed off' if sign or sign_next else 'Saved'} study {key} as version "
                                     f"{saved['version']}.")
        if sign_next:
            _go(nxt)
        st.rerun()
    if export and review is not None:
        _export(cfg, key, draft, review, reviewer)
    _downloads(cfg, key, draft, version)


def _forget_edits(key: str, draft: store.Draft) -> None:
    """Drop this tab's unsaved text and base version: the page shows the latest saved version again."""
    for name in draft.sections:
        st.session_state.pop(f"sec::{key}::{name}", None)
    st.session_state.pop(f"base::{key}", None)
    st.session_state.pop(f"reason::{key}", None)
    st.session_state.pop(f"amend::{key}", None)


def _export(cfg: store.AppConfig, key: str, draft: store.Draft, review: dict, reviewer: str) -> None:
    """Write the text and SR of the shown version as ``reviewed/<key>.v<N>.txt`` / ``.sr.dcm`` and audit it."""
    sections = review.get("sections") or {}
    numeric = {n: v for n, p in (draft.data.get("phenotypes") or {}).items()
               if isinstance(p, dict) and p.get("kind") == "numeric" and (v := store.phenotype_value(p)) is not None}
    if (read_only := reviews.writable(cfg.roots, draft.folder)) is not None:
        raise MedvidError(read_only)
    text_path = reviews.export_path(cfg.roots, draft.folder, key, review["version"], ".txt")
    sr_path = reviews.export_path(cfg.roots, draft.folder, key, review["version"], ".sr.dcm")
    atomic_write_text(text_path, reviews.reviewed_text(review, numeric))
    write_report_sr(sr_path, sections, numeric, study_key=key, signature=reviews.signature(review))  # atomic
    reviews.record_export(cfg.roots, draft.folder, review, [text_path, sr_path], reviewer.strip() or "")
    st.success(f"Exported version {review['version']} (text and DICOM SR) beside the review.")


def _downloads(cfg: store.AppConfig, key: str, draft: store.Draft, version: int) -> None:
    if not version:
        return
    for suffix, label, mime in ((".txt", "Download reviewed text", "text/plain"),
                                (".sr.dcm", "Download DICOM SR", "application/dicom")):
        path = reviews.exported(cfg.roots, draft.folder, key, version, suffix)
        if path is not None:
            st.download_button(f"{label} (version {version})", path.read_bytes(), file_name=path.name, mime=mime,
                               key=f"dl{suffix}")
    older = [v for v in range(1, version) if reviews.exported(cfg.roots, draft.folder, key, v, ".txt")]
    if older and reviews.exported(cfg.roots, draft.folder, key, version, ".txt") is None:
        st.caption(f"The last export is of version {older[-1]}, older than the current version {version}: "
                   "export again to share this version.")


# --------------------------------------------------------------------------- other studies of the patient


def _others(everyone: pd.DataFrame, key: str, table: store.DraftTable, revs: dict[str, dict | None]) -> None:
    """The patient's other studies (same ``patient_key``): each one's latest review (or its draft) by section.
    Their loops of a view are offered beside this study's in the main viewer."""
    others = store.same_patient(everyone, key)
    if not others:
        return
    st.subheader("Other studies of this patient")
    for other in others:
        review, draft = revs.get(other), table.drafts.get(other)
        status = store.study_status(other, table, review)
        with st.expander(f"Study {other} ({status})"):
            sections = (review or {}).get("sections") or {n: s.get("text") for n, s in (draft.sections if draft
                                                                                        else {}).items()}
            if not sections:
                st.caption("No report: this study was not drafted.")
            for name, text in sections.items():
                st.caption(ui.plain(name))
                st.text(str(text or ""))  # report text is plain text, never Markdown
            if st.button("Open this study", key=f"open::{other}"):
                ui.open_study(other)


# --------------------------------------------------------------------------- vendor measurements


def _measurements(src: store.Sources, key: str, loops: pd.DataFrame, views: dict[str, str]) -> None:
    """The study's vendor measurements (``measurements.csv``), current ones; replaced ones behind a toggle."""
    try:
        rows, more = ui.measurements(src, key)
    except MedvidError as exc:
        st.subheader("Vendor measurements")
        st.warning(f"Vendor measurements not shown: {ui.plain(exc)}")
        return
    if rows.empty:
        return
    st.subheader("Vendor measurements")
    st.caption("Measured on the echo machine (the study's measurement SRs), with the loop each was taken on.")
    replaced = int(store.is_replaced(rows).sum())
    show = replaced > 0 and st.toggle(f"Show {replaced} replaced measurement(s) (a later or better version of the "
                                      "SR holds the same measurement)", key=f"replaced::{key}")
    ui.table(store.measurement_table(rows, loops, views, show_replaced=show))
    if more:
        st.caption(f"Only the first {store.MAX_MEASUREMENTS} measurements of this study are read.")


# --------------------------------------------------------------------------- loops

PANE_PX = 640  # height of the two panes: each scrolls on its own, so the loops stay in view beside any section
VIEWER_PX = 330
THUMBS_PER_ROW = 3


def _views(draft: store.Draft | None, loops: pd.DataFrame) -> dict[str, str]:
    """Each loop's view: the draft's (classifier) label, else the ingest's."""
    drafted = {v.get("video_key"): v.get("view") for v in (draft.data.get("videos") or [])} if draft else {}
    return {k: str(drafted.get(k) or v or "unknown view") for k, v in zip(loops["video_key"], loops["view"])}


def _loops(cfg: store.AppConfig, src: store.Sources, key: str, draft: store.Draft | None, loops: pd.DataFrame,
           views: dict[str, str], everyone: pd.DataFrame) -> None:
    """The main viewer (one loop large, or two side by side synced by cardiac cycle: another of this study or
    a loop of the same view from another study of the patient), then thumbnails grouped by view."""
    st.subheader(f"Cine loops ({len(loops)})")
    if loops.empty:
        st.info("No ingested loops for this study under the data roots.")
        return
    names = store.loop_names(views)
    if not cfg.dicom_roots:
        st.info("Loops are not shown: start the app with `--dicom-root DIR` (the folder given to `medvid ingest`).")
    c1, c2 = st.columns(2)
    main_key = c1.selectbox("Main viewer", loops["video_key"].tolist(), format_func=names.get, key=f"main::{key}")
    priors = everyone[everyone["study_key"].isin(store.same_patient(everyone, key))
                      & (everyone["view"].astype(str) == views[main_key])]
    beside = {**{k: names[k] for k in loops["video_key"] if k != main_key},
              **{k: f"{v} of study {s}" for k, v, s in zip(priors["video_key"], priors["view"], priors["study_key"])}}
    compare = c2.selectbox("Beside it, synced by cardiac cycle", ["", *beside],
                           format_func=lambda k: beside.get(k, "(none)"), key=f"cmp::{key}")
    if cfg.dicom_roots:  # drawn in place, never through a placeholder: a rerun (a Save) keeps the players
        shown = [everyone[everyone["video_key"] == k].iloc[0] for k in (main_key, compare) if k]
        clips = [c for row, name in zip(shown, (names[main_key], beside.get(compare, "")))
                 if (c := _clip(cfg, src, row, name)) is not None]
        if clips:
            st.iframe(viewer_page.player_html(clips, VIEWER_PX), height=VIEWER_PX + 10)  # our page: names as JSON
    info = {v.get("video_key"): v for v in (draft.data.get("videos") or [])} if draft else {}
    left_out = {e["loop"]: e["reason"] for e in draft.left_out} if draft else {}
    for view in sorted(set(views.values())):
        group = loops[loops["video_key"].map(views) == view]
        st.markdown(f"**{ui.plain(view)}** ({len(group)})")
        grid = st.columns(THUMBS_PER_ROW)
        for i, (_, row) in enumerate(group.iterrows()):
            with grid[i % THUMBS_PER_ROW]:
                v = info.get(row["video_key"], {})
                conf = f" · {ui.plain(ui.fmt(v.get('view_confidence')))}" if v else ""
                st.caption(f"{ui.plain(names[row['video_key']])}{conf} · {ui.fmt(row.get('fps'), 0)} fps · "
                           f"{ui.plain(row.get('frames'))} frames")
                if row["video_key"] in left_out:
                    st.caption(f"Left out of the draft: {ui.plain(left_out[row['video_key']])}")
                if cfg.dicom_roots and (path := _render(cfg, src, row)) is not None:
                    st.video(str(path), loop=True, autoplay=True, muted=True)
    weights = _attention(draft, loops, views)
    if weights is not None:
        st.markdown("Attention per report section (how much each loop counted):")
        st.dataframe(weights.style.background_gradient(cmap="Blues", axis=None, vmin=0, vmax=1).format("{:.2f}"),
                     width="stretch", height=38 + 35 * len(weights))  # every row: none cut off


def _clip(cfg: store.AppConfig, src: store.Sources, row: pd.Series, name: str) -> viewer_page.Clip | None:
    path = _render(cfg, src, row)
    if path is None:
        return None
    r_waves = row.get("r_wave_times_s")
    return viewer_page.Clip(name, path.read_bytes(), float(row.get("fps") or 0), int(row.get("frames") or 0),
                            tuple(float(t) for t in r_waves) if r_waves is not None else ())


def _render(cfg: store.AppConfig, src: store.Sources, row: pd.Series) -> Path | None:
    """The loop's cached MP4 (rendered on first use); a warning and None when it cannot be shown."""
    try:
        out = store.loop_cache_path(cfg, row["video_key"])
        dicom = store.dicom_file(cfg, src.ingests[int(row["ingest"])], row["video_key"])
        box = row.get("sector_box")
        return render_cached(dicom, out, None if box is None else [int(b) for b in box])
    except (RenderError, MedvidError) as exc:
        st.warning(f"Loop not shown: {ui.plain(exc)}")
    except PermissionError:
        st.warning("Loop not shown: permission denied reading its DICOM file or writing the loop cache "
                   "(cache_dir=DIR sets another cache folder under a data root).")
    except Exception as exc:  # noqa: BLE001 - a damaged file must not break the page
        st.warning(f"Loop not shown: the file could not be decoded ({type(exc).__name__}).")
        ui.log.exception("loop %s", row["video_key"])
    return None


def _attention(draft: store.Draft | None, loops: pd.DataFrame, views: dict[str, str]) -> pd.DataFrame | None:
    """Loops × sections table of attention weights from the draft (None without one)."""
    if draft is None:
        return None
    table = {name: {v.get("video_key"): float(v.get("weight") or 0) for v in sec.get("videos") or []}
             for name, sec in draft.sections.items()}
    if not any(table.values()):
        return None
    df = pd.DataFrame(table).reindex(loops["video_key"]).fillna(0.0)
    df.index = df.index.map(store.loop_names(views))
    df.index.name = "loop"
    return df


ui.page("Study", main)
