"""The echo transfer protocol (EchoNet-Dynamic): EF regression or 0/1 phenotypes per study from frozen clip
features of an ingest folder — linear probe with label fractions and k-shot, training mean or chance,
zero-shot EF from the findings head, optionally a fine-tuned temporal module.

Clips of ``clip_frames`` frames at ``frame_stride``, every ``clip_step``-th start position; a study's prediction is
the mean over all clips of all its loops (beat-to-beat averaging).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_squared_error, r2_score

from medvid.io.ingest_folder import IngestFolder
from medvid.config import setting
from medvid.errors import MedvidError
from medvid.metrics import auroc, mean_absolute_error
from medvid.transfer.features import FEATURES, echo_clip_features, echo_frame_cache
from medvid.transfer.finetune import finetune_regression, predict_videos
from medvid.transfer.probe import fit_logistic, fit_ridge, split_validation
from medvid.transfer.protocol import ProbeResult, curves, study_mean
from medvid.zeroshot.classifier import FindingsClassifier
from medvid.zeroshot.prompts import load_findings, model_text_encoder
from medvid.zeroshot.recognise import prompt_file

log = logging.getLogger("medvid")

TASKS = ("echo-ef", "echo-phenotypes")


@dataclass
class EchoProbe:
    """Settings of the echo tasks (EchoNet-Dynamic protocol)."""

    video_root: str = setting("", "when --data is an ingest folder: the root that was ingested")
    features: str = setting("embedding", "embedding (model's temporal module + projection) | backbone_stats "
                                         "(mean ‖ sd)")
    clip_frames: int = setting(32, "clip length (EchoNet-Dynamic: 32)")
    frame_stride: int = setting(2, "every frame_stride-th native frame (EchoNet-Dynamic: 2)")
    clip_step: int = setting(1, "clip start every clip_step sampled frames (1 = all clips)")
    max_frames: int = setting(128, "sampled frames cached per loop")
    phenotypes: list[str] = setting(factory=list, help="echo-phenotypes: 0/1 label columns; [] = every 0/1 column "
                                                       "(+ reduced_ef from ef)")
    ef_threshold: float = setting(50.0, "echo-phenotypes: reduced_ef = ef < this when the labels have ef only")
    alphas: list[float] = setting(factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0],
                                  help="ridge (echo-ef), chosen on validation MAE")
    finetune: bool = setting(False, "echo-ef: fine-tune temporal module + head on cached backbone features")
    finetune_epochs: int = setting(30, "fine-tuning epochs")


def check_echo(e: Any) -> None:
    """Refuse unusable echo settings before any work."""
    if e.features not in FEATURES:
        raise MedvidError(f"features must be one of {FEATURES}, got {e.features!r}")
    if min(e.clip_frames, e.frame_stride, e.clip_step, e.max_frames) < 1:
        raise MedvidError("echo.clip_frames, echo.frame_stride, echo.clip_step and echo.max_frames must be >= 1")


def echo_targets(task: str, e: Any, ingest_dir: Path) -> pd.DataFrame:
    """Labels ``study_key, <targets>``: ``ef`` (echo-ef), or the chosen / every 0/1 phenotype column."""
    path = IngestFolder(ingest_dir).labels
    if not path.is_file():
        raise MedvidError(f"{path}: missing; ingest with labels (EchoNet FileList, or labels=)")
    labels = pd.read_csv(path)
    if task == "echo-ef":
        targets = ["ef"]
    else:
        if "ef" in labels and "reduced_ef" not in labels:
            labels["reduced_ef"] = (labels["ef"] < e.ef_threshold).astype(float).where(labels["ef"].notna())
        binary = [c for c in labels.columns[1:] if labels[c].dropna().isin([0, 1]).all() and labels[c].notna().any()]
        targets = list(e.phenotypes) or binary
    missing = [t for t in targets if t not in labels]
    if missing or not targets:
        raise MedvidError(f"{path}: no label column(s) {missing or 'with 0/1 values'}; has {list(labels.columns[1:])}")
    return labels[["study_key", *targets]]


def ef_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """EF MAE, RMSE and R² over the studies where both are known."""
    keep = ~np.isnan(y) & ~np.isnan(p)
    return {"mae": mean_absolute_error(y[keep], p[keep]), "rmse": float(np.sqrt(mean_squared_error(y[keep], p[keep]))),
            "r2": float(r2_score(y[keep], p[keep]))}


def probe_echo(task: str, model: Any, ingest_dir: Path, video_root: Path, p: Any, e: Any, cache_dir: Path,
               device: torch.device) -> ProbeResult:
    """The echo protocol (module docstring) on the loops of ``ingest_dir`` (files under ``video_root``);
    ``p``: the ``Protocol`` settings, ``e``: the ``EchoProbe`` settings; frame features cached in ``cache_dir``."""
    table = echo_targets(task, e, ingest_dir)
    targets = list(table.columns[1:])
    videos = IngestFolder(ingest_dir).read_videos()
    videos = videos[videos["split"].isin(["train", "val", "test"]) & videos["study_key"].isin(table["study_key"])]
    studies = sorted(set(videos["study_key"]))
    if not studies:
        raise MedvidError(f"{ingest_dir}: no labelled loop in a train/val/test split")
    sidx = {k: i for i, k in enumerate(studies)}
    split = videos.groupby("study_key")["split"].first().reindex(studies).to_numpy()
    y = table.set_index("study_key").reindex(studies)[targets].to_numpy(dtype=float)  # [S, P]
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    if not len(train) or not len(test):
        raise MedvidError(f"need train and test studies, have {len(train)} and {len(test)}")
    if not len(val):
        part = split_validation(train, p.val_fraction, 0)
        train, val = train[part[0]], train[part[1]]
    log.info("probe %s: %d loops of %d studies (train %d, val %d, test %d)", task, len(videos), len(studies),
             len(train), len(val), len(test))
    cache = echo_frame_cache(model, ingest_dir, video_root, videos, cache_dir / "echo_frames", e.frame_stride,
                             e.max_frames, p.batch_size, device, p.progress)
    feats, emb, owner, loops = [], [], [], []
    for key, study in zip(videos["video_key"], videos["study_key"]):
        f, m = cache[key]
        if e.finetune:  # fine-tuning re-reads the frame features; the probe needs only clip features
            loops.append((f, m, sidx[study]))
        x = echo_clip_features(model, f, m, e.clip_frames, e.clip_step, e.features)
        feats.append(x)
        if p.zero_shot:
            emb.append(x if e.features == "embedding" else
                       echo_clip_features(model, f, m, e.clip_frames, e.clip_step, "embedding"))
        owner.append(np.full(len(x), sidx[study]))
    x, owner = np.concatenate(feats), np.concatenate(owner)
    n = len(studies)

    def fit_predict(units: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Fit on the clips of ``train[units]``; per-study predictions [S, P] and validation scores."""
        pred, val_scores = np.full((n, len(targets)), np.nan), {}
        for j, t in enumerate(targets):
            tr = train[units][~np.isnan(y[train[units], j])]
            va = val[~np.isnan(y[val, j])]
            rows, vrows = np.isin(owner, tr), np.isin(owner, va)
            if task == "echo-ef":
                probe = fit_ridge(x[rows], y[owner[rows], j], x[vrows], None, e.alphas,
                                  lambda q: mean_absolute_error(y[va, j], study_mean(q, owner[vrows], n)[va]))
                pred[:, j] = study_mean(probe.predict(x), owner, n)
            else:
                probe = fit_logistic(x[rows], y[owner[rows], j].astype(int), x[vrows], None, 2, p.cs,
                                     lambda q: auroc(y[va, j], study_mean(q[:, 1], owner[vrows], n)[va]))
                pred[:, j] = study_mean(probe.predict(x)[:, 1], owner, n)
            val_scores[t] = probe.val_score
        return pred, val_scores

    def score(pred: np.ndarray) -> dict[str, float]:
        if task == "echo-ef":
            return ef_scores(y[test, 0], pred[test, 0])
        per = {t: auroc(y[test, j], pred[test, j]) for j, t in enumerate(targets)}
        values = np.array(list(per.values()))
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return {"mean_auroc": mean, **{f"auroc_{t}": v for t, v in per.items()}}

    strat = np.nan_to_num(y[train, 0], nan=-1.0)
    key = "mae" if task == "echo-ef" else "mean_auroc"
    fractions, shots = curves(p, strat, lambda units, seed: score(fit_predict(units)[0]), key)
    full_pred, val_scores = fit_predict(np.arange(len(train)))
    results: dict[str, Any] = {"probe": {**score(full_pred), "validation": val_scores}}
    predictions = pd.DataFrame({"study_key": studies, "split": split})
    for j, t in enumerate(targets):
        predictions[t] = y[:, j]
        predictions[f"probe_{t}"] = full_pred[:, j]
    lines: dict[str, float] = {}
    if task == "echo-ef":
        mean_pred = np.full((n, 1), np.nanmean(y[train, 0]))
        results["training_mean"] = score(mean_pred)
        lines["training mean"] = results["training_mean"]["mae"]
    else:
        results["chance"] = {"mean_auroc": 0.5}
        lines["chance"] = 0.5
    if p.zero_shot:
        zs = echo_zero_shot(model, np.concatenate(emb), owner, n, p.prompts)
        if task == "echo-ef":
            results["zero_shot"] = score(zs[:, None])
            lines["zero-shot"] = results["zero_shot"]["mae"]
            predictions["zero_shot_ef"] = zs
        elif "reduced_ef" in targets:  # ranked by the zero-shot EF (lower = more likely reduced)
            j = targets.index("reduced_ef")
            results["zero_shot"] = {"auroc_reduced_ef": auroc(y[test, j], -zs[test])}
            predictions["zero_shot_ef"] = zs
    if e.finetune:
        results["finetune"], predictions["finetune_ef"] = echo_finetune(model, loops, y[:, 0], train, val, test, n,
                                                                        e, p.seeds[0])
        lines["fine-tuned temporal module (100 %)"] = results["finetune"]["mae"]
    headline = {"probe_" + key: results["probe"][key], **{f"{k}_{key}": v.get(key) for k, v in results.items()
                                                            if k != "probe" and isinstance(v, dict) and key in v}}
    metrics = {"headline_metric": key, "headline": headline, "results": results, "label_fractions": fractions,
               "k_shot": shots, "targets": targets, "studies": {"train": int(len(train)), "val": int(len(val)),
                                                                "test": int(len(test))},
               "loops": int(len(videos)), "clips": int(len(x)), "protocol": (
                   f"clips of {e.clip_frames} frames at stride {e.frame_stride}, starts every {e.clip_step} sampled "
                   f"frame(s); per-study prediction = mean over all clips of all loops; features: {e.features}; "
                   "regularisation chosen on validation studies")}
    return ProbeResult(metrics, {"predictions.csv": predictions},
                       {"linear probe": [fractions[f"{f:g}"][key] for f in p.fractions]}, lines,
                       "EF MAE (points, lower is better)" if key == "mae" else "mean AUROC")


def echo_zero_shot(model: Any, emb: np.ndarray, owner: np.ndarray, n: int, prompts: str | None = None) -> np.ndarray:
    """Zero-shot EF per study: the findings head's EF of every clip, averaged per study."""
    path = prompt_file("echo", "findings", prompts)
    findings = [f for f in load_findings(path) if f.kind == "numeric" and "ejection" in f.name]
    if not findings:
        raise MedvidError(f"{path}: no numeric ejection-fraction finding")
    with torch.no_grad():
        head = FindingsClassifier(findings[:1], model_text_encoder(model))
        ef = head(torch.from_numpy(emb))[findings[0].name]
    return study_mean(np.asarray(ef, dtype=float), owner, n)


def echo_finetune(model: Any, loops: list, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray,
                  n: int, e: Any, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Temporal module + head fine-tuned per loop (the study's EF); study = mean over its loops."""
    def pick(studies: np.ndarray) -> tuple[list, np.ndarray]:
        chosen = [(f, m, s) for f, m, s in loops if s in set(studies.tolist()) and not np.isnan(y[s])]
        return [(f, m) for f, m, _ in chosen], np.array([s for _, _, s in chosen])

    (tr, tr_s), (va, va_s) = pick(train), pick(val)
    net, mu, sd, val_mae, epoch = finetune_regression(model, tr, y[tr_s], va, y[va_s], e.clip_frames,
                                                      e.finetune_epochs, seed=seed)
    everything = [(f, m) for f, m, _ in loops]
    owners = np.array([s for _, _, s in loops])
    pred = study_mean(predict_videos(net, everything, e.clip_frames, e.clip_step) * sd + mu, owners, n)
    return {**ef_scores(y[test], pred[test]), "validation_mae": val_mae, "best_epoch": epoch}, pred
