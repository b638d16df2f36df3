"""Surgical video: zero-shot phase and tool results of one video (player, phase ribbon, probability
curves, tool timeline, metrics) with a time slider that seeks the player."""
from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from medvid.apps import store, ui


def main() -> None:
    st.title("Surgical video")
    cfg, src = ui.config(), ui.current_sources()
    if not src.zero_shots:
        st.info("No zero-shot output under the data roots: run `medvid zero-shot phase|tools … --out DIR` and "
                "start the app with `--data DIR` (add the Cholec80 root too to play the videos).")
        return
    labels = {_label(p, cfg.data): p for p in src.zero_shots}
    c1, c2 = st.columns(2)
    folder = labels[c1.selectbox("Zero-shot output", list(labels), key="surg_out")]
    names = store.prediction_videos(folder)
    if not names:
        st.info("This zero-shot output has no predictions/*.csv yet.")
        return
    video = c2.selectbox("Video", names, key="surg_video")
    phase = _table(cfg, src, folder, video, "phase")
    tools = _table(cfg, src, folder, video, "tools")
    base = phase if phase is not None else tools
    times = base["time_s"].astype(float).to_numpy()
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    t = st.slider("Time (s): seeks the player", 0.0, float(times[-1]), 0.0, step=step, key="surg_time")
    left, right = st.columns([3, 2])
    with left:
        path = store.find_video(cfg.roots, src.video_roots, video)
        if path is None:
            st.info("The video file was not found: add its Cholec80-layout root (with videos/) to --data.")
        else:
            st.video(str(path), start_time=int(t), muted=True)
    with right:
        _at_time(phase, tools, t)
    if phase is not None:
        _phase_charts(phase, t)
    if tools is not None:
        _tool_chart(tools, t)
    _metrics(src, video)


def _label(folder: Path, data: tuple[Path, ...]) -> str:
    """A folder named relative to the data root it was found in."""
    for root in data:
        try:
            return str(folder.relative_to(Path(root).resolve())) or folder.name
        except ValueError:
            continue
    return folder.name


def _table(cfg: store.AppConfig, src: store.Sources, chosen: Path, video: str, task: str) -> pd.DataFrame | None:
    """Predictions of ``video`` for ``task``: from the chosen output, else another output of that task."""
    folders = [chosen] + [p for p in src.zero_shots if p != chosen]
    for folder in folders:
        if store.zero_shot_task(folder) == task and video in store.prediction_videos(folder):
            return store.read_predictions(cfg.roots, folder, video)
    return None


def _at_time(phase: pd.DataFrame | None, tools: pd.DataFrame | None, t: float) -> None:
    st.subheader(f"Top phases at {t:.1f} s")
    if phase is not None:
        row = phase.iloc[int(np.abs(phase["time_s"].to_numpy() - t).argmin())]
        classes = store.phase_names(phase)
        probs = sorted(((float(row[f"p_{c}"]), c) for c in classes), reverse=True)[:3]
        ui.table(pd.DataFrame({"phase": [c for _, c in probs], "probability": [f"{p:.2f}" for p, _ in probs]}))
        if "gt_index" in row and int(row["gt_index"]) >= 0:
            st.caption(f"Ground truth: {ui.plain(classes[int(row['gt_index'])])}")
    if tools is not None:
        row = tools.iloc[int(np.abs(tools["time_s"].to_numpy() - t).argmin())]
        present = [c for c in store.tool_names(tools) if int(row[f"pred_{c}"])]
        st.caption("Tools predicted present: " + (", ".join(present) or "none"))


def _phase_charts(df: pd.DataFrame, t: float) -> None:
    classes = store.phase_names(df)
    step = float(np.median(np.diff(df["time_s"]))) if len(df) > 1 else 1.0
    rows = [pd.DataFrame({"time_s": df["time_s"], "end_s": df["time_s"] + step, "track": "prediction",
                          "phase": [classes[int(i)] for i in df["pred_index"]]})]
    if "gt_index" in df:
        gt = df[df["gt_index"] >= 0]
        rows.append(pd.DataFrame({"time_s": gt["time_s"], "end_s": gt["time_s"] + step, "track": "ground truth",
                                  "phase": [classes[int(i)] for i in gt["gt_index"]]}))
    ribbon = pd.concat(rows, ignore_index=True)
    scale = alt.Scale(domain=classes, scheme="tableau10")
    rule = alt.Chart(pd.DataFrame({"time_s": [t]})).mark_rule(color="black", strokeWidth=2).encode(x="time_s:Q")
    st.subheader("Phase ribbon (prediction vs ground truth)")
    chart = alt.Chart(ribbon).mark_rect().encode(
        x=alt.X("time_s:Q", title="time (s)"), x2="end_s:Q", y=alt.Y("track:N", title=None, sort=["prediction"]),
        color=alt.Color("phase:N", scale=scale), tooltip=["time_s", "track", "phase"])
    st.altair_chart(chart + rule, height=130)
    st.subheader("Probability per phase")
    long = df.melt(id_vars=["time_s"], value_vars=[f"p_{c}" for c in classes], var_name="phase", value_name="p")
    long["phase"] = long["phase"].str[2:]
    lines = alt.Chart(long).mark_line().encode(x=alt.X("time_s:Q", title="time (s)"), y=alt.Y("p:Q", title="probability"),
                                               color=alt.Color("phase:N", scale=scale))
    st.altair_chart(lines + rule, height=220)


def _tool_chart(df: pd.DataFrame, t: float) -> None:
    tools = store.tool_names(df)
    step = float(np.median(np.diff(df["time_s"]))) if len(df) > 1 else 1.0
    parts = []
    for c in tools:
        parts.append(pd.DataFrame({"time_s": df["time_s"], "end_s": df["time_s"] + step, "tool": c,
                                   "track": "prediction", "present": df[f"pred_{c}"].astype(int),
                                   "p": df[f"p_{c}"]}))
        if f"gt_{c}" in df:
            parts.append(pd.DataFrame({"time_s": df["time_s"], "end_s": df["time_s"] + step, "tool": c,
                                       "track": "ground truth", "present": df[f"gt_{c}"].astype(int), "p": np.nan}))
    long = pd.concat(parts, ignore_index=True)
    long = long[long["present"] > 0]
    st.subheader("Tool presence (prediction vs ground truth)")
    if long.empty:
        st.caption("No tool predicted or annotated present in this video.")
        return
    chart = alt.Chart(long).mark_rect().encode(
        x=alt.X("time_s:Q", title="time (s)"), x2="end_s:Q", y=alt.Y("tool:N", title=None, sort=tools),
        yOffset=alt.YOffset("track:N"), color=alt.Color("track:N", title=None), tooltip=["tool", "track", "p"])
    rule = alt.Chart(pd.DataFrame({"time_s": [t]})).mark_rule(color="black").encode(x="time_s:Q")
    st.altair_chart(chart + rule, height=40 + 26 * len(tools))


def _metrics(src: store.Sources, video: str) -> None:
    st.subheader("Metrics")
    shown = False
    for folder in src.zero_shots:
        metrics = store.read_metrics(folder)
        if not metrics or not metrics.get("results"):
            continue
        shown = True
        if metrics.get("task") == "tools":
            m = metrics["results"].get("raw", {})
            st.markdown(f"Tools ({ui.plain(folder.name)}): mAP {ui.fmt(m.get('map'))} — per-tool average precision over "
                        "all videos (a random scorer's AP is the tool's prevalence)")
            ui.table(pd.DataFrame({"AP": m.get("ap", {}), "prevalence": m.get("prevalence", {})}).map(ui.fmt))
            continue
        overall, per = [], []
        for variant, m in metrics["results"].items():
            s, r = m.get("strict", {}), m.get("relaxed", {})
            overall.append({"predictions": variant, "strict accuracy": s.get("accuracy"),
                            "strict macro-F1": s.get("macro_f1"), "relaxed accuracy": r.get("accuracy"),
                            "relaxed Jaccard": r.get("jaccard"), "relaxed precision": r.get("precision"),
                            "relaxed recall": r.get("recall"), "videos": m.get("n_videos")})
            pv = (s.get("per_video") or {}).get(video)
            if pv is not None:
                per.append({"predictions": variant, "strict accuracy": pv.get("accuracy"),
                            "strict macro-F1": pv.get("macro_f1"),
                            "relaxed accuracy": (r.get("per_video_accuracy") or {}).get(video)})
        st.markdown(f"Phases ({ui.plain(folder.name)}), all videos — strict = SurgVLP-family per-video accuracy/macro-F1 "
                    "averaged over videos; relaxed = M2CAI 2016 (boundary tolerance):")
        ui.table(pd.DataFrame(overall).map(ui.fmt))
        if per:
            st.markdown(f"This video ({ui.plain(video)}):")
            ui.table(pd.DataFrame(per).map(ui.fmt))
    if not shown:
        st.info("No readable metrics.json (with annotated videos) in the zero-shot outputs.")


ui.page("Surgical video", main)
