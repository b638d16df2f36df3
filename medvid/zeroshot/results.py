"""What a zero-shot run reports from its prediction tables: the metrics per prediction variant
(``OUT/metrics.json``), the plots (``OUT/plots/*.png``) and the human summary (``OUT/report.md``).

``settings`` below is the job's config: the recogniser's settings (``Recognition``) plus ``task``,
``model``, ``dataset``, ``split``, ``fps``, ``tolerance_s`` and ``cholec80_exceptions``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import OmegaConf

from medvid.zeroshot.evaluate import phase_results, tool_results
from medvid.zeroshot.outputs import Table
from medvid.zeroshot.plots import confusion_matrix_plot, phase_ribbon

Pairs = list[tuple[np.ndarray, np.ndarray]]  # annotated (gt, pred) per video


def evaluate_phases(settings: Any, tables: Mapping[str, Table],
                    classes: Sequence[str]) -> tuple[dict[str, Any], dict[str, Pairs]]:
    """Metrics per prediction variant (raw, smoothed when on, prompts-only with adaptation on), and the
    annotated (gt, pred) pairs used; both empty when no video is annotated."""
    s = settings
    exceptions = s.cholec80_exceptions and s.dataset == "cholec80"
    variants = {"raw": "pred_index"}
    if s.smoothing != "none":
        variants[f"smoothed_{s.smoothing}"] = "pred_smoothed_index"
    if s.task == "phase" and s.adaptation != "none":
        variants["prompts_only"] = "prompt_index"  # before self-training, unsmoothed
    out: dict[str, Any] = {}
    used: dict[str, Pairs] = {}
    for variant, col in variants.items():
        pairs, names = [], []
        for name, t in tables.items():
            if "gt_index" not in t:
                continue
            gt, pred = t["gt_index"].astype(int), t[col].astype(int)
            keep = gt >= 0
            if keep.any():
                pairs.append((gt[keep], pred[keep]))
                names.append(name)
        if not pairs:
            return {}, {}
        out[variant] = phase_results(pairs, names, len(classes), s.fps, s.tolerance_s, exceptions)
        used[variant] = pairs
    return out, used


def evaluate_tools(tables: Mapping[str, Table], classes: Sequence[str]) -> dict[str, Any]:
    """Tool AP over the annotated samples of every annotated video (``{}`` when none is)."""
    ys, ss = [], []
    for t in tables.values():
        if f"gt_{classes[0]}" not in t:
            continue
        y = np.stack([t[f"gt_{c}"].astype(int) for c in classes], 1)
        s = np.stack([t[f"p_{c}"].astype(float) for c in classes], 1)
        keep = (y >= 0).all(1)
        ys.append(y[keep])
        ss.append(s[keep])
    if not ys:
        return {}
    return {"raw": tool_results(ys, ss, classes)}


def metrics_record(settings: Any, prompt_path: Path, sampling: Mapping[str, Any], classes: Sequence[str],
                   results: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``OUT/metrics.json`` (paths left out of the settings)."""
    s = settings
    return {"task": s.task, "model": Path(s.model).resolve().name, "prompts": prompt_path.name,
            "settings": {k: v for k, v in OmegaConf.to_container(s, resolve=True).items()
                         if k not in ("data_root", "model", "out", "expand_corpus")},
            "sampling": sampling,
            "classes": classes, "chance_accuracy": 1.0 / len(classes) if s.task == "phase" else None,
            "results": results}


def headline(task: str, results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The numbers per variant a run's summary prints."""
    if task == "phase":
        return {v: {"strict_accuracy": m["strict"]["accuracy"], "strict_macro_f1": m["strict"]["macro_f1"],
                    "relaxed_accuracy": m["relaxed"]["accuracy"], "relaxed_jaccard": m["relaxed"]["jaccard"]}
                for v, m in results.items()}
    return {v: {"map": m["map"]} for v, m in results.items()}


def write_plots(out: str | os.PathLike, task: str, tables: Mapping[str, Table], classes: Sequence[str],
                pairs_by_variant: Mapping[str, Pairs]) -> list[str]:
    """``plots/<video>_ribbon.png`` per video and ``plots/confusion_<variant>.png`` per evaluated variant;
    returns their paths relative to ``out``."""
    out = Path(out)
    written = []
    for name, t in tables.items():
        gt = t["gt_index"].astype(int) if "gt_index" in t else None
        path = out / "plots" / f"{name}_ribbon.png"
        phase_ribbon(path, t["time_s"].astype(float), t["pred_index"].astype(int), classes, gt, title=name)
        written.append(str(path.relative_to(out)))
    for variant, pairs in pairs_by_variant.items():
        path = out / "plots" / f"confusion_{variant}.png"
        confusion_matrix_plot(path, np.concatenate([g for g, _ in pairs]), np.concatenate([p for _, p in pairs]),
                              classes, title=f"{task} ({variant})")
        written.append(str(path.relative_to(out)))
    return written


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def report_text(settings: Any, prompt_path: Path, classes: Sequence[str], metrics: Mapping[str, Any],
                summary: Mapping[str, Any]) -> str:
    """``OUT/report.md``: what was run (from ``settings`` and the job's ``summary``) and the metrics table."""
    cfg = settings
    lines = [f"# Zero-shot {cfg.task} recognition", "",
             f"- model: `{Path(cfg.model).resolve().name}`",
             f"- prompts: `{prompt_path.name}` ({len(classes)} classes)",
             f"- dataset: {cfg.dataset}, split: {cfg.split or 'all videos'}; videos predicted: "
             f"{summary['videos_done']}, failed: {summary['videos_failed']}",
             f"- sampling: {cfg.fps:g} fps, clip of {summary['sampling']['clip_frames']} frame(s) at "
             f"{summary['sampling']['clip_fps']:g} fps ({summary['sampling']['source']}), crop "
             f"{cfg.crop or 'as the model'}, scale {cfg.scale:g}",
             f"- prompts widened with {summary['expansion']}" if summary.get("expansion") else
             "- prompts as written (no corpus expansion)",
             f"- calibration: {cfg.calibration}" + ("" if cfg.calibration == "none" else
                                                   f" (strength {cfg.calibration_strength:g})")
             if cfg.task == "phase" else f"- tool scores relative to: {cfg.tool_reference}",
             *([f"- adaptation: label-free self-training over the run's {summary['videos_done']} videos "
                f"(pseudo-labels: the {cfg.adaptation_fraction:g} most confident of each phase; logistic "
                f"regression C {cfg.adaptation_c:g}, share {cfg.adaptation_mix:g}); `prompts_only` = before it"]
               if cfg.task == "phase" and cfg.adaptation != "none" else []),
             f"- smoothing: {cfg.smoothing}" + ("" if cfg.smoothing == "none" else
                                                f" (window {cfg.smoothing_window}); reported separately below"),
             ""]
    if not metrics.get("results"):
        return "\n".join(lines + ["No annotated videos: predictions only (OUT/predictions/)."]) + "\n"
    if cfg.task == "phase":
        lines += [f"Scores in %. Chance accuracy for {len(classes)} balanced phases: {100 / len(classes):.1f}.", "",
                  "| predictions | strict accuracy | strict macro-F1 | relaxed accuracy | relaxed Jaccard "
                  "| relaxed precision | relaxed recall | videos |", "|---|---|---|---|---|---|---|---|"]
        for variant, m in metrics["results"].items():
            s, r = m["strict"], m["relaxed"]
            lines.append(f"| {variant} | {_fmt(s['accuracy'])} ± {_fmt(s['accuracy_std'])} | {_fmt(s['macro_f1'])} "
                         f"| {_fmt(r['accuracy'])} | {_fmt(r['jaccard'])} | {_fmt(r['precision'])} "
                         f"| {_fmt(r['recall'])} | {m['n_videos']} |")
        lines += ["", "Strict = the SurgVLP-family protocol (per-video accuracy and macro-F1, averaged over "
                  "videos, no smoothing). Relaxed = the M2CAI 2016 evaluation "
                  f"({cfg.tolerance_s:g} s boundary tolerance). Plots: `plots/`."]
    else:
        m = metrics["results"]["raw"]
        lines += ["| tool | AP (%) | prevalence (%) = AP of a random scorer |", "|---|---|---|"]
        lines += [f"| {c} | {_fmt(v)} | {_fmt(m['prevalence'][c])} |" for c, v in m["ap"].items()]
        lines += [f"| **mAP** | **{_fmt(m['map'])}** | |"]
    return "\n".join(lines) + "\n"
