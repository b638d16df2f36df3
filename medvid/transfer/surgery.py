"""The surgical transfer protocol (Cholec80 layout, named splits): phases or tools per second from frozen
per-second embeddings — linear probe over label fractions of training videos (and k seconds per phase),
a dilated temporal convolution head, chance / majority / prevalence, and zero-shot through the zero-shot
recogniser (``medvid.zeroshot.recognise``, the zero-shot job's definition and settings) on the same test
videos, so its numbers are those ``medvid zero-shot`` reports for them.

Phases are scored by strict and relaxed accuracy / F1 / Jaccard (``medvid.metrics``), tools by mAP.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvid.config import setting
from medvid.datasets.cholec80 import Cholec80
from medvid.errors import MedvidError
from medvid.metrics import tool_average_precision
from medvid.transfer.features import surgery_embeddings, surgery_frame_features
from medvid.transfer.fewshot import k_shot, mean_sd
from medvid.transfer.probe import fit_logistic, fit_multilabel, split_validation
from medvid.transfer.protocol import ProbeResult, curves
from medvid.transfer.temporal import predict_tcn, train_tcn
from medvid.zeroshot.evaluate import TOLERANCE_S, phase_results, tool_results
from medvid.zeroshot.prompts import load_prompt_set
from medvid.zeroshot.recognise import Recogniser, Recognised, Recognition, corpus_path, prompt_file

log = logging.getLogger("medvid")

TASKS = ("phase", "tools")


@dataclass
class SurgeryProbe:
    """Settings of the surgical tasks."""

    split: str = setting("cholec80_40_40", "named split (cholec80_40_40, cholec80_40_8_32, autolaparo_10_4_7)")
    dataset: str = setting("cholec80", "cholec80 | autolaparo")
    fps: float = setting(1.0, "evaluation rate")
    clip_frames: int = setting(1, "probe embedding over this many samples centred on each second")
    temporal_head: bool = setting(True, "dilated temporal convolution head (one MS-TCN stage)")
    tcn_epochs: int = setting(40, "temporal head epochs")
    tcn_layers: int = setting(8, "dilations 1..2^(layers-1): receptive field 2^(layers+1)-1 samples")
    causal: bool = setting(False, "true: TeCNO-style online head")
    recognition: Recognition = setting(factory=Recognition, help="zero-shot: the zero-shot job's recogniser "
                                                                 "settings")


def check_surgery(s: Any) -> None:
    """Refuse unusable surgical settings before any work."""
    if s.clip_frames < 1:
        raise MedvidError("surgery.clip_frames must be >= 1")


def surgery_zero_shot(model: Any, model_dir: str | Path, ds: Cholec80, task: str, videos: list[str], s: Any,
                      prompts: str | None = None) -> list[Recognised]:
    """Zero-shot results of ``videos`` as ``medvid zero-shot`` computes them (one run over these videos)."""
    path = prompt_file(ds.dataset, task, prompts)
    recogniser = Recogniser(model, task, load_prompt_set(path, ds.phases if task == "phase" else ds.tools),
                            s.recognition, s.fps, corpus_path(s.recognition, model_dir))
    return recogniser.recognise([ds.video_path(v) for v in videos])


def probe_surgery(task: str, model: Any, model_dir: str | Path, data: str | Path, p: Any, s: Any,
                  cache_dir: Path) -> ProbeResult:
    """The surgical protocol (module docstring) on the Cholec80-layout root ``data``; ``p``: the ``Protocol``
    settings, ``s``: the ``SurgeryProbe`` settings; frame features cached in ``cache_dir``."""
    ds = Cholec80(data, dataset=s.dataset)
    scheme = s.split.partition(":")[0]
    names = {k: ds.videos(f"{scheme}:{k}") for k in ("train", "test")}
    try:
        names["val"] = ds.videos(f"{scheme}:val")
    except MedvidError:
        names["val"] = []
    phase = task == "phase"
    names = {k: [v for v in vs if (ds.has_annotations(v) if phase else ds.has_tool_annotations(v))]
             for k, vs in names.items()}
    if not names["train"] or not names["test"]:
        raise MedvidError(f"{data}: split {scheme} needs annotated train and test videos, found "
                          f"{len(names['train'])} and {len(names['test'])}")
    if not names["val"]:
        tr, va = split_validation(np.arange(len(names["train"])), p.val_fraction, 0) if len(names["train"]) > 1 \
            else (np.arange(1), np.arange(1))
        names["val"] = [names["train"][i] for i in va]
        names["train"] = [names["train"][i] for i in tr]
    every = [v for k in ("train", "val", "test") for v in names[k]]
    feats = surgery_frame_features(model, ds, every, cache_dir / "surgery", s.fps, 8 * p.batch_size)
    classes = list(ds.phases if phase else ds.tools)
    per_video: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for v in every:
        times, f = feats[v]
        gt = ds.phases_at(v, times) if phase else ds.tools_at(v, times)
        keep = _annotated(gt)
        per_video[v] = (times[keep], surgery_embeddings(model, f, s.clip_frames)[keep], gt[keep])
    log.info("probe %s: videos train %d, val %d, test %d", task, *(len(names[k]) for k in ("train", "val", "test")))

    def stack(vs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([per_video[v][1] for v in vs]), np.concatenate([per_video[v][2] for v in vs])

    xv, yv = stack(names["val"])
    test = names["test"]
    exceptions = s.dataset == "cholec80"

    def score_pairs(gts: list[np.ndarray], probs: list[np.ndarray]) -> dict[str, float]:
        if phase:
            r = phase_results([(g, q.argmax(1)) for g, q in zip(gts, probs)], test, len(classes), s.fps,
                              TOLERANCE_S, exceptions)
            return {"strict_accuracy": r["strict"]["accuracy"], "strict_macro_f1": r["strict"]["macro_f1"],
                    "relaxed_accuracy": r["relaxed"]["accuracy"], "relaxed_jaccard": r["relaxed"]["jaccard"]}
        return {"map": tool_results(gts, probs, classes)["map"]}

    def score(probs: list[np.ndarray]) -> dict[str, float]:
        return score_pairs([per_video[v][2] for v in test], probs)

    def fit(x: np.ndarray, y: np.ndarray):
        return fit_logistic(x, y, xv, yv, len(classes), p.cs) if phase else fit_multilabel(x, y, xv, yv, p.cs)

    def probe_on_videos(units: np.ndarray, seed: int) -> dict[str, float]:
        probe = fit(*stack([names["train"][i] for i in units]))
        return score([probe.predict(per_video[v][1]) for v in test])

    def tcn_on_videos(units: np.ndarray, seed: int) -> dict[str, float]:
        return score(_tcn(s, [per_video[names["train"][i]] for i in units], [per_video[v] for v in names["val"]],
                          [per_video[v][1] for v in test], len(classes), phase, seed)[0])

    key = "strict_accuracy" if phase else "map"
    unit_y = np.zeros(len(names["train"]), dtype=np.int64)  # video-level fractions: one stratum
    fractions, _ = curves(p, unit_y, probe_on_videos, key, kshot=False)
    shots = {}
    if phase and p.kshots:
        x_all, y_all = stack(names["train"])
        for k in p.kshots:
            runs = []
            for seed in p.seeds:
                idx = k_shot(y_all, k, seed)
                runs.append(score([fit(x_all[idx], y_all[idx]).predict(per_video[v][1]) for v in test]))
            shots[str(k)] = {m: mean_sd([r[m] for r in runs]) for m in runs[0]}
    probe = fit(*stack(names["train"]))
    probe_probs = [probe.predict(per_video[v][1]) for v in test]
    results: dict[str, Any] = {"probe": {**score(probe_probs), "C": probe.param, "validation": probe.val_score}}
    lcurves = {"linear probe": [fractions[f"{f:g}"][key] for f in p.fractions]}
    cols: dict[str, list[np.ndarray]] = {"probe": probe_probs}
    if s.temporal_head:
        tcn_fr, _ = curves(p, unit_y, tcn_on_videos, key, kshot=False)
        probs, val_score = _tcn(s, [per_video[v] for v in names["train"]], [per_video[v] for v in names["val"]],
                                [per_video[v][1] for v in test], len(classes), phase, p.seeds[0])
        results["temporal_head"] = {**score(probs), "validation": val_score, "label_fractions": tcn_fr}
        lcurves["temporal head (dilated TCN)"] = [tcn_fr[f"{f:g}"][key] for f in p.fractions]
        cols["tcn"] = probs
    y_train = stack(names["train"])[1]
    lines: dict[str, float] = {}
    if phase:
        majority = np.bincount(y_train, minlength=len(classes)).argmax()
        results["majority_class"] = score([np.eye(len(classes))[np.full(len(per_video[v][2]), majority)] for v in test])
        results["chance"] = {"strict_accuracy": 1.0 / len(classes)}
        lines["chance (1/C)"] = 1.0 / len(classes)
    else:
        y_test = np.concatenate([per_video[v][2] for v in test])
        prevalence = [y_test[:, j].mean() for j in range(len(classes)) if y_test[:, j].any()]
        results["chance"] = {"map": float(np.mean(prevalence))}
        lines["chance (prevalence)"] = results["chance"]["map"]
    if p.zero_shot:
        zs = surgery_zero_shot(model, model_dir, ds, task, test, s, p.prompts)
        gts = [ds.phases_at(v, r.embedding.times) if phase else ds.tools_at(v, r.embedding.times)
               for v, r in zip(test, zs)]
        keep = [_annotated(g) for g in gts]
        results["zero_shot"] = score_pairs([g[k] for g, k in zip(gts, keep)], [r.probs[k] for r, k in zip(zs, keep)])
        lines["zero-shot"] = results["zero_shot"][key]
        cols["zero_shot"] = [_at(r.embedding.times, r.probs, per_video[v][0]) for v, r in zip(test, zs)]
    headline = {f"{k}_{key}": v[key] for k, v in results.items() if isinstance(v, dict) and key in v}
    metrics = {"headline_metric": key, "headline": headline, "results": results, "label_fractions": fractions,
               "k_shot": shots, "classes": classes, "videos": {k: names[k] for k in ("train", "val", "test")},
               "protocol": (f"{s.fps:g} fps embeddings over {s.clip_frames} sample(s); label fractions "
                            "are fractions of training videos; k-shot = k seconds per phase; relaxed metrics with a "
                            f"{TOLERANCE_S:g} s tolerance" + (" and the Cholec80 exceptions" if exceptions else "") +
                            "; zero-shot as medvid zero-shot scores these test videos (results.raw)")}
    tables = {f"predictions/{v}.csv": _predictions(v, per_video, cols, i, classes, phase) for i, v in enumerate(test)}
    return ProbeResult(metrics, tables, lcurves, lines, "strict accuracy" if phase else "mAP")


def _annotated(gt: np.ndarray) -> np.ndarray:
    """Samples with a label (phases: ``>= 0``; tools: every tool known)."""
    return gt >= 0 if gt.ndim == 1 else (gt >= 0).all(1)


def _at(times: np.ndarray, probs: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Rows of ``probs`` (at ``times``) for the samples nearest to the times ``at`` (the same 1/fps grid)."""
    idx = np.clip(np.searchsorted(times, at - 1e-6), 0, len(times) - 1)
    return probs[idx]


def _tcn(s: Any, train: list, val: list, test_x: list, n_classes: int, phase: bool,
         seed: int) -> tuple[list[np.ndarray], float]:
    def val_score(probs: list[np.ndarray]) -> float:
        if phase:
            return float(np.mean([np.mean(q.argmax(1) == y) for q, (_, _, y) in zip(probs, val)]))
        return tool_average_precision(np.concatenate([y for _, _, y in val]), np.concatenate(probs))["map"]

    model, best = train_tcn([(x, y) for _, x, y in train], [(x, y) for _, x, y in val], n_classes, val_score,
                            multilabel=not phase, epochs=s.tcn_epochs, layers=s.tcn_layers, causal=s.causal,
                            seed=seed)
    return predict_tcn(model, test_x, multilabel=not phase), best


def _predictions(v: str, data: dict, cols: dict[str, list[np.ndarray]], i: int, classes: list[str],
                 phase: bool) -> pd.DataFrame:
    """One test video's predictions per second: ground truth and each method's (phase names / tool scores)."""
    times, _, gt = data[v]
    frame: dict[str, Any] = {"time_s": times.round(3)}
    if phase:
        frame["gt"] = [classes[g] for g in gt]
        frame.update({name: [classes[j] for j in probs[i].argmax(1)] for name, probs in cols.items()})
    else:
        for j, c in enumerate(classes):
            frame[f"gt_{c}"] = gt[:, j]
            frame.update({f"{name}_{c}": probs[i][:, j].round(4) for name, probs in cols.items()})
    return pd.DataFrame(frame)
