"""``medvid zero-shot phase|tools DATA_ROOT --model DIR --out DIR``: zero-shot surgical phase / tool
recognition on a Cholec80-layout root (or a folder of videos: predictions only).

The recogniser (``medvid.zeroshot.recognise``, the settings it defines come first in ``Config``) scores each
video: embeddings every ``1/fps`` s → prompt scores, calibrated → ``OUT/predictions/<video>.csv`` (atomic;
videos already there are skipped, so a killed run resumes). Phases are then self-trained over all the run's
videos from the prompt-only scores kept in the CSVs. Then ``OUT/metrics.json`` (strict and relaxed,
labelled), ``OUT/plots/*.png`` and ``OUT/report.md`` from the CSVs of the selected videos.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from medvid.config import setting
from medvid.datasets.cholec80 import DATASETS, Cholec80
from medvid.device import check_device, resolve_device
from medvid.errors import MedvidError
from medvid.io.video import Video
from medvid.models.checkpoint import load_video_text_model
from medvid.runs import claim_run
from medvid.utils import atomic_path, atomic_write_text, jsonable, relative_message, write_jsonl
from medvid.zeroshot.evaluate import TOLERANCE_S, phase_results, tool_results
from medvid.zeroshot.plots import confusion_matrix_plot, phase_ribbon
from medvid.zeroshot.prompts import load_prompt_set
from medvid.zeroshot.recognise import TASKS, Recogniser, Recognition, check_recognition, corpus_path, prompt_file

log = logging.getLogger("medvid")

# Settings that change predictions: a resumed run must match them.
_FINGERPRINT_KEYS = ("task", "model_sha256", "dataset", "fps", "clip_frames", "clip_fps", "crop", "scale",
                     "tool_bias", "tool_threshold", "tool_reference", "tool_scale", "smoothing", "smoothing_window", "hmm_stay",
                     "hmm_backward", "calibration", "calibration_strength", "expand_k", "expand_weight",
                     "expand_margin", "corpus_sha256", "prompt_sha256", "adaptation", "adaptation_fraction",
                     "adaptation_c", "adaptation_mix")


@dataclass
class Config(Recognition):
    """The job's settings; the recogniser's (``Recognition``: clip, scales, calibration, expansion, adaptation,
    smoothing) come first, with their meanings."""

    task: str = setting("phase", "phase | tools (set by the subcommand)")
    data_root: str = setting("", "Cholec80-layout root, or a folder of videos")
    model: str = setting("", "folder written by save_pretrained")
    out: str = setting("", "output folder")
    prompts: Optional[str] = setting(None, "YAML/JSON prompt file; null = the shipped one for the dataset and task")
    dataset: str = setting("cholec80", "cholec80 | autolaparo: phase names and relaxed-metric exceptions")
    split: Optional[str] = setting(None, "e.g. cholec80_40_8_32:test (SurgVLP family) or cholec80_40_40:test; "
                                         "null = every video in the root")
    max_videos: int = setting(0, "0 = all")
    fps: float = setting(1.0, "evaluation rate")
    tolerance_s: float = setting(TOLERANCE_S, "relaxed metrics: boundary tolerance (M2CAI 2016)")
    cholec80_exceptions: bool = setting(True, "relaxed metrics: Cholec80 transition exceptions (dataset cholec80 "
                                              "only)")
    plots: bool = setting(True, "phase ribbons per video + confusion matrix (PNG)")
    save_embeddings: bool = setting(False, "OUT/embeddings/<video>.npy (always written for phases when adaptation "
                                           "is on)")
    device: str = setting("cpu", "auto | cpu | cuda | cuda:N")
    threads: int = setting(0, "torch intra-op threads; 0 = torch's default")
    overwrite: bool = setting(False, "false: resume (skip videos with predictions); settings must match")


def _check(cfg: Any) -> None:
    if cfg.task not in TASKS:
        raise MedvidError(f"task must be one of {TASKS}, got {cfg.task!r}")
    for key in ("data_root", "model", "out"):
        if not getattr(cfg, key):
            raise MedvidError(f"{key} is required")
    if not Path(cfg.data_root).is_dir():
        raise MedvidError(f"data_root does not exist or is not a folder: {cfg.data_root}")
    if not (Path(cfg.model) / "config.json").is_file():
        raise MedvidError(f"{cfg.model}: not a medvid model folder (no config.json from save_pretrained)")
    if cfg.dataset not in DATASETS:
        raise MedvidError(f"dataset must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    check_recognition(cfg)
    check_device(cfg.device)


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _fingerprint(cfg: Any, prompt_path: Path, corpus: Path | None, sampling: dict[str, Any]) -> dict[str, Any]:
    values = {**OmegaConf.to_container(cfg, resolve=True), **sampling}
    values["model_sha256"] = _sha256(sorted(p for p in Path(cfg.model).rglob("*") if p.is_file()))
    values["prompt_sha256"] = _sha256([prompt_path])
    values["corpus_sha256"] = None if corpus is None else _sha256(
        sorted(corpus.glob("*.jsonl")) if corpus.is_dir() else [corpus])
    return {k: values[k] for k in _FINGERPRINT_KEYS}


def _claim_out(out: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Record the settings; refuse to resume a run made with other settings (``overwrite`` starts afresh)."""
    claim_run(out, fingerprint, overwrite, has_results=any((out / "predictions").glob("*.csv")))
    if overwrite:
        for f in (out / "predictions").glob("*.csv"):
            f.unlink()


# --------------------------------------------------------------------------- per video


def _gt(ds: Cholec80, task: str, name: str, times: np.ndarray) -> np.ndarray | None:
    try:
        if task == "phase":
            return ds.phases_at(name, times) if ds.has_annotations(name) else None
        return ds.tools_at(name, times) if ds.has_tool_annotations(name) else None
    except MedvidError as exc:
        log.error("%s: annotations unusable, predictions only (%s)", name, relative_message(exc, ds.root))
        return None


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _phase_rows(rec: Recogniser, times, frames, probs: np.ndarray, gt, prompt_probs: np.ndarray):
    """CSV of one video: the predictions (``probs``), smoothed when on, and with adaptation on the
    prompt-only probabilities it started from (``prompt_p_*``, ``prompt_index``)."""
    classes = rec.classes
    header = ["time_s", "frame", "pred", "pred_index", *[f"p_{c}" for c in classes]]
    pred = probs.argmax(1)
    cols = [times.round(3), frames, [classes[i] for i in pred], pred, *probs.T.round(5)]
    if rec.settings.smoothing != "none":
        header += ["pred_smoothed_index"]
        cols.append(rec.smooth(probs).argmax(1))
    if rec.adapting:
        header += ["prompt_index", *[f"prompt_p_{c}" for c in classes]]
        cols += [prompt_probs.argmax(1), *prompt_probs.T.round(5)]
    if gt is not None:
        header += ["gt_index"]
        cols.append(gt)
    return header, [list(r) for r in zip(*cols)]


def _tool_rows(times, frames, probs: np.ndarray, present: np.ndarray, classes: list[str], gt):
    header = ["time_s", "frame", *[f"p_{c}" for c in classes], *[f"pred_{c}" for c in classes]]
    cols = [times.round(3), frames, *probs.T.round(5), *present.T.astype(int)]
    if gt is not None:
        header += [f"gt_{c}" for c in classes]
        cols += list(gt.T)
    return header, [list(r) for r in zip(*cols)]


def _process_video(cfg, ds, name, rec: Recogniser, pred_dir: Path, emb_dir: Path | None) -> None:
    with Video(ds.video_path(name)) as video:
        e = rec.embed(video)
    gt = _gt(ds, cfg.task, name, e.times)
    probs = rec.score(e.emb)
    if cfg.task == "phase":
        header, rows = _phase_rows(rec, e.times, e.frames, probs, gt, probs)
    else:
        header, rows = _tool_rows(e.times, e.frames, probs, rec.present(probs), rec.classes, gt)
    if emb_dir is not None:
        with atomic_path(emb_dir / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, e.emb.numpy().astype(np.float32))
    _write_csv(pred_dir / f"{name}.csv", header, rows)


def _adapt(rec: Recogniser, names: list[str], pred_dir: Path, emb_dir: Path) -> int:
    """Self-train over every predicted video of the run from its prompt-only probabilities (read back
    from the CSVs, so a resumed run adapts exactly as a fresh one) and rewrite the CSVs. Returns the
    number of videos adapted."""
    done = [n for n in names if (pred_dir / f"{n}.csv").exists()]
    if not done:
        return 0
    missing = [n for n in done if not (emb_dir / f"{n}.npy").exists()]
    if missing:
        raise MedvidError(f"adaptation needs the embeddings of every predicted video; missing in {emb_dir}: "
                          f"{missing[:5]} (rerun with overwrite=true)")
    tables = {n: _read_csv(pred_dir / f"{n}.csv") for n in done}
    prompt = [np.stack([tables[n][f"prompt_p_{c}"].astype(float) for c in rec.classes], 1) for n in done]
    adapted = rec.adapt([np.load(emb_dir / f"{n}.npy") for n in done], prompt)
    for n, p0, p in zip(done, prompt, adapted):
        t = tables[n]
        gt = t["gt_index"].astype(int) if "gt_index" in t else None
        header, rows = _phase_rows(rec, t["time_s"].astype(float), t["frame"].astype(int), p, gt, p0)
        _write_csv(pred_dir / f"{n}.csv", header, rows)
    return len(done)


# --------------------------------------------------------------------------- evaluation


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return {h: np.array([r[j] for r in body]) for j, h in enumerate(header)}


def _phase_eval(cfg, tables: dict[str, dict], classes: list[str]) -> tuple[dict[str, Any], dict[str, list]]:
    """Metrics per prediction variant (raw, and smoothed when on), and the (gt, pred) pairs used."""
    exceptions = cfg.cholec80_exceptions and cfg.dataset == "cholec80"
    variants = {"raw": "pred_index"}
    if cfg.smoothing != "none":
        variants[f"smoothed_{cfg.smoothing}"] = "pred_smoothed_index"
    if cfg.task == "phase" and cfg.adaptation != "none":
        variants["prompts_only"] = "prompt_index"  # before self-training, unsmoothed
    out: dict[str, Any] = {}
    used: dict[str, list] = {}
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
        out[variant] = phase_results(pairs, names, len(classes), cfg.fps, cfg.tolerance_s, exceptions)
        used[variant] = pairs
    return out, used


def _tool_eval(tables: dict[str, dict], classes: list[str]) -> dict[str, Any]:
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


def _plots(cfg, out: Path, tables, classes, pairs_by_variant) -> list[str]:
    written = []
    for name, t in tables.items():
        gt = t["gt_index"].astype(int) if "gt_index" in t else None
        path = out / "plots" / f"{name}_ribbon.png"
        phase_ribbon(path, t["time_s"].astype(float), t["pred_index"].astype(int), classes, gt, title=name)
        written.append(str(path.relative_to(out)))
    for variant, pairs in pairs_by_variant.items():
        path = out / "plots" / f"confusion_{variant}.png"
        confusion_matrix_plot(path, np.concatenate([g for g, _ in pairs]), np.concatenate([p for _, p in pairs]),
                              classes, title=f"{cfg.task} ({variant})")
        written.append(str(path.relative_to(out)))
    return written


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def _report(cfg, prompt_path: Path, classes: list[str], metrics: dict, summary: dict) -> str:
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


# --------------------------------------------------------------------------- job


def run(cfg: Any) -> dict:
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, root = Path(cfg.out), Path(cfg.data_root)
    prompt_path = prompt_file(cfg.dataset, cfg.task, cfg.prompts)
    ds = Cholec80(root, dataset=cfg.dataset)
    names = ds.videos(cfg.split)
    if cfg.max_videos:
        names = names[:cfg.max_videos]
    if not names:
        raise MedvidError(f"{root}: no videos found" + (f" in split {cfg.split}" if cfg.split else ""))
    prompts = load_prompt_set(prompt_path, ds.phases if cfg.task == "phase" else ds.tools)
    corpus = corpus_path(cfg, cfg.model)
    model = load_video_text_model(cfg.model, map_location=resolve_device(cfg.device))  # any video-text kind
    rec = Recogniser(model, cfg.task, prompts, cfg, cfg.fps, corpus)
    sampling = rec.sampling
    _claim_out(out, _fingerprint(cfg, prompt_path, corpus, sampling), cfg.overwrite)

    pred_dir = out / "predictions"
    todo = [n for n in names if not (pred_dir / f"{n}.csv").exists()]
    errors: list[dict] = []
    t0 = time.perf_counter()
    if todo:
        head = rec.head  # the prompt embeddings, once for the run
        if rec.expansion is not None:
            atomic_write_text(out / "expanded_prompts.json", json.dumps(rec.expansion.neighbours, indent=1))
        emb_dir = out / "embeddings" if cfg.save_embeddings or rec.adapting else None
        log.info("zero-shot %s: %d videos to do, %d already done (%d classes)", cfg.task, len(todo),
                 len(names) - len(todo), len(head.classes))
        for i, name in enumerate(todo, 1):
            try:
                _process_video(cfg, ds, name, rec, pred_dir, emb_dir)
                log.info("[%d/%d] %s done", i, len(todo), name)
            except (MedvidError, ValueError, RuntimeError) as exc:
                log.error("%s: skipped (%s)", name, relative_message(exc, root))
                errors.append({"video": name, "error": relative_message(exc, root)})
    if errors:
        write_jsonl(out / "errors.jsonl", errors)
    if rec.adapting:
        log.info("zero-shot phase: self-training over %d videos", _adapt(rec, names, pred_dir, out / "embeddings"))
    elapsed = time.perf_counter() - t0

    tables = {n: _read_csv(pred_dir / f"{n}.csv") for n in names if (pred_dir / f"{n}.csv").exists()}
    if not tables:
        raise MedvidError(f"zero-shot {cfg.task}: no video could be predicted ({len(errors)} failed); "
                          f"see {out / 'errors.jsonl'}")
    annotated = [n for n in names if (ds.has_annotations(n) if cfg.task == "phase" else ds.has_tool_annotations(n))]
    if not annotated:
        folder = "phase_annotations" if cfg.task == "phase" else "tool_annotations"
        log.warning("no annotations found in DATA_ROOT/%s for these videos: predictions only, no metrics "
                    "(is DATA_ROOT the Cholec80-layout root that holds videos/ and %s/?)", folder, folder)
    results, pairs = (_phase_eval(cfg, tables, prompts.classes) if cfg.task == "phase"
                      else (_tool_eval(tables, prompts.classes), {}))
    summary = {"task": cfg.task, "videos": len(names), "videos_done": len(tables), "videos_failed": len(errors),
               "videos_annotated": len(annotated), "seconds": round(elapsed, 2), "sampling": sampling}
    if rec.expansion_note:
        summary["expansion"] = rec.expansion_note
    if errors:
        summary["errors"] = str(out / "errors.jsonl")
    metrics = {"task": cfg.task, "model": Path(cfg.model).resolve().name, "prompts": prompt_path.name,
               "settings": {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
                            if k not in ("data_root", "model", "out", "expand_corpus")},
               "sampling": sampling,
               "classes": prompts.classes, "chance_accuracy": 1.0 / len(prompts.classes) if cfg.task == "phase" else None,
               "results": results}
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2))
    if cfg.plots and cfg.task == "phase" and tables:
        summary["plots"] = len(_plots(cfg, out, tables, prompts.classes, pairs))
    atomic_write_text(out / "report.md", _report(cfg, prompt_path, prompts.classes, metrics, summary))
    for variant, m in results.items():
        if cfg.task == "phase":
            summary[variant] = {"strict_accuracy": m["strict"]["accuracy"], "strict_macro_f1": m["strict"]["macro_f1"],
                                "relaxed_accuracy": m["relaxed"]["accuracy"], "relaxed_jaccard": m["relaxed"]["jaccard"]}
        else:
            summary[variant] = {"map": m["map"]}
    return summary


