"""``medvid probe TASK --model DIR --data ROOT --out DIR``: downstream transfer of a frozen model.

Tasks: ``echo-ef`` (regression), ``echo-phenotypes`` (binary), ``phase`` and ``tools`` (Cholec80 layout,
named splits). Frozen features are computed once and cached (``cache``, default ``OUT/cache``); then, for every label
fraction and k-shot setting and every seed, a linear probe (ridge / logistic, regularisation chosen on
the validation split, or on held-out training videos when there is none) is trained and scored on
the test split; optionally a fine-tuned temporal module (echo EF) or a dilated temporal convolution
head (phases, tools). Zero-shot scores of the same model and chance / training-mean baselines are
computed on the same test split.

* Echo (``ROOT`` = an ingest folder with ``video_root``, or an EchoNet-Dynamic root, ingested into
  ``OUT/ingest``): EchoNet-Dynamic protocol, clips of ``clip_frames`` frames at ``period``, every start
  position; a study's prediction is the mean over all clips of all its loops (beat-to-beat);
  EF MAE / RMSE / R², phenotype AUROC.
* Surgery: per-second embeddings (as the zero-shot job computes them); phases by strict and relaxed
  accuracy / F1 / Jaccard (``medvid.metrics``), tools by mAP.

Writes ``OUT/metrics.json``, ``OUT/learning_curve.png``, predictions (``OUT/predictions.csv`` for echo,
``OUT/predictions/<video>.csv`` for surgery); returns a JSON summary.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import mean_squared_error, r2_score

from medvid.config import config_dir, load_config, require_dirs
from medvid.datasets.cholec80 import Cholec80
from medvid.io.ingest_folder import IngestFolder
from medvid.errors import MedvidError
from medvid.io.echo_videos import is_echonet_root
from medvid.metrics import (auroc, mean_absolute_error, relaxed_phase_metrics, strict_phase_metrics,
                            tool_average_precision)
from medvid.models.clip import VideoTextModel
from medvid.transfer.features import (FEATURES, echo_clip_features, echo_frame_cache, surgery_embeddings,
                                      surgery_frame_features)
from medvid.transfer.fewshot import k_shot, label_fraction, mean_sd
from medvid.transfer.finetune import finetune_regression, predict_videos
from medvid.transfer.plots import learning_curve
from medvid.transfer.probe import fit_logistic, fit_multilabel, fit_ridge, split_validation
from medvid.transfer.temporal import predict_tcn, train_tcn
from medvid.utils import atomic_path, atomic_write_text, jsonable
from medvid.zeroshot.classifier import FindingsClassifier, PhaseClassifier, ToolClassifier
from medvid.device import check_device
from medvid.zeroshot.prompts import load_findings, load_prompt_set, model_text_encoder

log = logging.getLogger("medvid")

TASKS = ("echo-ef", "echo-phenotypes", "phase", "tools")
SURGERY_PROMPTS = {("cholec80", "phase"): "cholec80_phases.yaml", ("autolaparo", "phase"): "autolaparo_phases.yaml",
                   ("cholec80", "tools"): "cholec80_tools.yaml"}


@dataclass
class Config:
    task: str = "echo-ef"             # echo-ef | echo-phenotypes | phase | tools
    model: str = ""                   # folder written by save_pretrained
    data: str = ""                    # echo: ingest folder or EchoNet-Dynamic root; surgery: Cholec80-layout root
    video_root: str = ""              # echo with an ingest folder as data: the root its files are relative to
    out: str = ""
    cache: str = ""                   # frozen-feature cache folder (shareable between tasks); blank = OUT/cache
    features: str = "embedding"       # echo: embedding (temporal module + projection) | backbone_stats (mean ‖ sd)
    clip_frames: int = 32             # echo clip length (EchoNet-Dynamic: 32)
    period: int = 2                   # echo: every period-th native frame (EchoNet-Dynamic: 2)
    clip_step: int = 1                # echo: start positions every clip_step sampled frames (1 = all)
    max_frames: int = 128             # echo: sampled frames cached per loop
    phenotypes: list[str] = field(default_factory=list)  # echo-phenotypes: 0/1 columns; [] = all (+ reduced_ef)
    ef_threshold: float = 50.0        # echo-phenotypes: reduced_ef = ef < this, when labels have ef only
    split: str = "cholec80_40_40"     # surgery: named split (train/test, optional val)
    dataset: str = "cholec80"         # surgery: cholec80 | autolaparo
    fps: float = 1.0                  # surgery: evaluation rate
    surgery_clip_frames: int = 1      # surgery: embedding over this many samples centred on each second
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    kshots: list[int] = field(default_factory=lambda: [1, 5, 10])  # per class (EF: per quartile); [] = none
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    val_fraction: float = 0.2         # no validation split: hold out this share of training videos
    alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])
    cs: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    temporal_head: bool = True        # surgery: dilated temporal convolution head (MS-TCN stage)
    tcn_epochs: int = 40
    tcn_layers: int = 8
    causal: bool = False              # TeCNO-style online head
    finetune: bool = False            # echo-ef: fine-tune temporal module + head on cached backbone features
    finetune_epochs: int = 30
    zero_shot: bool = True
    prompts: Optional[str] = None     # null: configs/prompts/echo_findings.yaml or the surgical set
    scale: float = 100.0
    batch_size: int = 4               # loops (echo) / frames / 8 (surgery) per backbone call
    device: str = "cpu"
    threads: int = 0
    progress: bool = True


def _check(cfg: Any) -> None:
    if cfg.task not in TASKS:
        raise MedvidError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if not cfg.out:
        raise MedvidError("out is required")
    require_dirs(model=cfg.model, data=cfg.data)
    check_device(cfg.device)
    if cfg.features not in FEATURES:
        raise MedvidError(f"features must be one of {FEATURES}, got {cfg.features!r}")
    if not cfg.fractions or any(not 0 < f <= 1 for f in cfg.fractions):
        raise MedvidError(f"fractions must be in (0, 1], got {list(cfg.fractions)}")
    if any(k < 1 for k in cfg.kshots) or not cfg.seeds:
        raise MedvidError("kshots must be >= 1 and seeds non-empty")
    if min(cfg.clip_frames, cfg.period, cfg.clip_step, cfg.max_frames, cfg.surgery_clip_frames) < 1:
        raise MedvidError("clip_frames, period, clip_step, max_frames and surgery_clip_frames must be >= 1")
    if cfg.finetune and cfg.task != "echo-ef":
        raise MedvidError("finetune applies to echo-ef (phases and tools have temporal_head)")


def run(cfg: Config) -> dict:
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    model = VideoTextModel.from_pretrained(cfg.model, map_location=cfg.device).eval()
    result = _run_echo(cfg, model, out) if cfg.task.startswith("echo") else _run_surgery(cfg, model, out)
    result.update({"task": cfg.task, "model": Path(cfg.model).resolve().name,
                   "settings": {k: v for k, v in _settings(cfg).items() if k not in ("model", "data", "out")}})
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(result), indent=2))
    summary = {"task": cfg.task, "out": str(out), "seconds": round(time.perf_counter() - t0, 1),
               "headline_metric": result["headline_metric"], **result["headline"]}
    log.info("probe %s: %s", cfg.task, summary)
    return jsonable(summary)


def _cache(cfg: Any, out: Path) -> Path:
    return Path(cfg.cache) if cfg.cache else out / "cache"


def _settings(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(vars(cfg))


# --------------------------------------------------------------------------- shared protocol


def _curves(cfg: Any, units_y: np.ndarray, fit_score: Callable[[np.ndarray, int], dict[str, float]],
            key: str, kshot: bool = True) -> tuple[dict, dict]:
    """Score ``fit_score(train unit indices, seed)`` for every fraction / k-shot and seed → mean ± sd."""
    fractions, shots = {}, {}
    for f in cfg.fractions:
        runs = [fit_score(label_fraction(units_y, f, s), s) for s in (cfg.seeds if f < 1 else cfg.seeds[:1])]
        fractions[f"{f:g}"] = {k: mean_sd([r[k] for r in runs]) for k in runs[0]}
        log.info("fraction %g: %s %.4f", f, key, fractions[f"{f:g}"][key]["mean"])
    for k in cfg.kshots if kshot else []:
        runs = [fit_score(k_shot(units_y, k, s), s) for s in cfg.seeds]
        shots[str(k)] = {m: mean_sd([r[m] for r in runs]) for m in runs[0]}
    return fractions, shots


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")


# --------------------------------------------------------------------------- echo


def _echo_source(cfg: Any, out: Path) -> tuple[Path, Path]:
    """(ingest folder, root of its files); an EchoNet-Dynamic root is ingested into OUT/ingest first."""
    data = Path(cfg.data)
    if IngestFolder(data).exists():
        if not cfg.video_root or not Path(cfg.video_root).is_dir():
            raise MedvidError("data is an ingest folder: give video_root=<the root that was ingested>")
        return data, Path(cfg.video_root)
    if not is_echonet_root(data):
        raise MedvidError(f"{data}: neither an ingest folder (videos.parquet) nor an EchoNet-Dynamic root "
                          "(FileList.csv)")
    from medvid.pipelines import ingest

    ingest.run(load_config(ingest.Config, "ingest", None, [f"dicom_root={data}", f"out={out / 'ingest'}",
                                                           f"progress={str(cfg.progress).lower()}"]))
    return out / "ingest", data


def _echo_targets(cfg: Any, ingest_dir: Path) -> pd.DataFrame:
    """Labels ``study_key, <targets>``: ``ef`` (echo-ef), or the chosen / every 0/1 phenotype column."""
    path = IngestFolder(ingest_dir).labels
    if not path.is_file():
        raise MedvidError(f"{path}: missing; ingest with labels (EchoNet FileList, or labels=)")
    labels = pd.read_csv(path)
    if cfg.task == "echo-ef":
        targets = ["ef"]
    else:
        if "ef" in labels and "reduced_ef" not in labels:
            labels["reduced_ef"] = (labels["ef"] < cfg.ef_threshold).astype(float).where(labels["ef"].notna())
        binary = [c for c in labels.columns[1:] if labels[c].dropna().isin([0, 1]).all() and labels[c].notna().any()]
        targets = list(cfg.phenotypes) or binary
    missing = [t for t in targets if t not in labels]
    if missing or not targets:
        raise MedvidError(f"{path}: no label column(s) {missing or 'with 0/1 values'}; has {list(labels.columns[1:])}")
    return labels[["study_key", *targets]]


def _study_mean(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of per-clip ``values`` per study index (NaN for studies without clips)."""
    sums = np.zeros((n,) + values.shape[1:])
    np.add.at(sums, owner, values)
    counts = np.bincount(owner, minlength=n).reshape((n,) + (1,) * (values.ndim - 1))
    with np.errstate(invalid="ignore"):
        return sums / counts


def _ef_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    keep = ~np.isnan(y) & ~np.isnan(p)
    return {"mae": mean_absolute_error(y[keep], p[keep]), "rmse": float(np.sqrt(mean_squared_error(y[keep], p[keep]))),
            "r2": float(r2_score(y[keep], p[keep]))}


def _run_echo(cfg: Any, model: Any, out: Path) -> dict:
    ingest_dir, video_root = _echo_source(cfg, out)
    table = _echo_targets(cfg, ingest_dir)
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
        part = split_validation(train, cfg.val_fraction, 0)
        train, val = train[part[0]], train[part[1]]
    log.info("probe %s: %d loops of %d studies (train %d, val %d, test %d)", cfg.task, len(videos), len(studies),
             len(train), len(val), len(test))
    cache = echo_frame_cache(model, ingest_dir, video_root, videos, _cache(cfg, out) / "echo_frames", cfg.period,
                             cfg.max_frames, cfg.batch_size, cfg.device, cfg.progress)
    feats, emb, owner, loops = [], [], [], []
    for key, study in zip(videos["video_key"], videos["study_key"]):
        f, m = cache[key]
        if cfg.finetune:  # fine-tuning re-reads the frame features; the probe needs only clip features
            loops.append((f, m, sidx[study]))
        x = echo_clip_features(model, f, m, cfg.clip_frames, cfg.clip_step, cfg.features)
        feats.append(x)
        if cfg.zero_shot:
            emb.append(x if cfg.features == "embedding" else
                       echo_clip_features(model, f, m, cfg.clip_frames, cfg.clip_step, "embedding"))
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
            if cfg.task == "echo-ef":
                probe = fit_ridge(x[rows], y[owner[rows], j], x[vrows], None, cfg.alphas,
                                  lambda p: mean_absolute_error(y[va, j], _study_mean(p, owner[vrows], n)[va]))
                pred[:, j] = _study_mean(probe.predict(x), owner, n)
            else:
                probe = fit_logistic(x[rows], y[owner[rows], j].astype(int), x[vrows], None, 2, cfg.cs,
                                     lambda p: auroc(y[va, j], _study_mean(p[:, 1], owner[vrows], n)[va]))
                pred[:, j] = _study_mean(probe.predict(x)[:, 1], owner, n)
            val_scores[t] = probe.val_score
        return pred, val_scores

    def score(pred: np.ndarray) -> dict[str, float]:
        if cfg.task == "echo-ef":
            return _ef_scores(y[test, 0], pred[test, 0])
        per = {t: auroc(y[test, j], pred[test, j]) for j, t in enumerate(targets)}
        values = np.array(list(per.values()))
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return {"mean_auroc": mean, **{f"auroc_{t}": v for t, v in per.items()}}

    strat = np.nan_to_num(y[train, 0], nan=-1.0)
    key = "mae" if cfg.task == "echo-ef" else "mean_auroc"
    fractions, shots = _curves(cfg, strat, lambda units, seed: score(fit_predict(units)[0]), key)
    full_pred, val_scores = fit_predict(np.arange(len(train)))
    results: dict[str, Any] = {"probe": {**score(full_pred), "validation": val_scores}}
    predictions = pd.DataFrame({"study_key": studies, "split": split})
    for j, t in enumerate(targets):
        predictions[t] = y[:, j]
        predictions[f"probe_{t}"] = full_pred[:, j]
    lines: dict[str, float] = {}
    if cfg.task == "echo-ef":
        mean_pred = np.full((n, 1), np.nanmean(y[train, 0]))
        results["training_mean"] = score(mean_pred)
        lines["training mean"] = results["training_mean"]["mae"]
    else:
        results["chance"] = {"mean_auroc": 0.5}
        lines["chance"] = 0.5
    if cfg.zero_shot:
        zs = _echo_zero_shot(cfg, model, np.concatenate(emb), owner, n)
        if cfg.task == "echo-ef":
            results["zero_shot"] = score(zs[:, None])
            lines["zero-shot"] = results["zero_shot"]["mae"]
            predictions["zero_shot_ef"] = zs
        elif "reduced_ef" in targets:  # ranked by the zero-shot EF (lower = more likely reduced)
            j = targets.index("reduced_ef")
            results["zero_shot"] = {"auroc_reduced_ef": auroc(y[test, j], -zs[test])}
            predictions["zero_shot_ef"] = zs
    if cfg.finetune:
        results["finetune"], predictions["finetune_ef"] = _echo_finetune(cfg, model, loops, y[:, 0], train, val,
                                                                         test, n)
        lines["fine-tuned temporal module (100 %)"] = results["finetune"]["mae"]
    _write_csv(out / "predictions.csv", predictions)
    curves = {"linear probe": [fractions[f"{f:g}"][key] for f in cfg.fractions]}
    learning_curve(out / "learning_curve.png", cfg.fractions, curves, lines,
                   "EF MAE (points, lower is better)" if key == "mae" else "mean AUROC",
                   f"{cfg.task}: {Path(cfg.model).name}")
    headline = {"probe_" + key: results["probe"][key], **{f"{k}_{key}": v.get(key) for k, v in results.items()
                                                            if k != "probe" and isinstance(v, dict) and key in v}}
    return {"headline_metric": key, "headline": headline, "results": results, "label_fractions": fractions,
            "k_shot": shots, "targets": targets, "studies": {"train": int(len(train)), "val": int(len(val)),
                                                             "test": int(len(test))},
            "loops": int(len(videos)), "clips": int(len(x)), "protocol": (
                f"clips of {cfg.clip_frames} frames at period {cfg.period}, starts every {cfg.clip_step} sampled "
                f"frame(s); per-study prediction = mean over all clips of all loops; features: {cfg.features}; "
                "regularisation chosen on validation studies")}


def _echo_zero_shot(cfg: Any, model: Any, emb: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Zero-shot EF per study: the findings head's EF of every clip, averaged per study."""
    path = Path(cfg.prompts) if cfg.prompts else config_dir() / "prompts" / "echo_findings.yaml"
    findings = [f for f in load_findings(path) if f.kind == "numeric" and "ejection" in f.name]
    if not findings:
        raise MedvidError(f"{path}: no numeric ejection-fraction finding")
    with torch.no_grad():
        head = FindingsClassifier(findings[:1], model_text_encoder(model), cfg.scale)
        ef = head(torch.from_numpy(emb))[findings[0].name]
    return _study_mean(np.asarray(ef, dtype=float), owner, n)


def _echo_finetune(cfg: Any, model: Any, loops: list, y: np.ndarray, train: np.ndarray, val: np.ndarray,
                   test: np.ndarray, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """Temporal module + head fine-tuned per loop (the study's EF); study = mean over its loops."""
    def pick(studies: np.ndarray) -> tuple[list, np.ndarray]:
        chosen = [(f, m, s) for f, m, s in loops if s in set(studies.tolist()) and not np.isnan(y[s])]
        return [(f, m) for f, m, _ in chosen], np.array([s for _, _, s in chosen])

    (tr, tr_s), (va, va_s) = pick(train), pick(val)
    net, mu, sd, val_mae, epoch = finetune_regression(model, tr, y[tr_s], va, y[va_s], cfg.clip_frames,
                                                      cfg.finetune_epochs, seed=cfg.seeds[0])
    everything = [(f, m) for f, m, _ in loops]
    owners = np.array([s for _, _, s in loops])
    pred = _study_mean(predict_videos(net, everything, cfg.clip_frames, cfg.clip_step) * sd + mu, owners, n)
    return {**_ef_scores(y[test], pred[test]), "validation_mae": val_mae, "best_epoch": epoch}, pred


# --------------------------------------------------------------------------- surgery


def _run_surgery(cfg: Any, model: Any, out: Path) -> dict:
    ds = Cholec80(cfg.data, dataset=cfg.dataset)
    scheme = cfg.split.partition(":")[0]
    names = {s: ds.videos(f"{scheme}:{s}") for s in ("train", "test")}
    try:
        names["val"] = ds.videos(f"{scheme}:val")
    except MedvidError:
        names["val"] = []
    names = {s: [v for v in vs if (ds.has_annotations(v) if cfg.task == "phase" else ds.has_tool_annotations(v))]
             for s, vs in names.items()}
    if not names["train"] or not names["test"]:
        raise MedvidError(f"{cfg.data}: split {scheme} needs annotated train and test videos, found "
                          f"{len(names['train'])} and {len(names['test'])}")
    if not names["val"]:
        tr, va = split_validation(np.arange(len(names["train"])), cfg.val_fraction, 0) if len(names["train"]) > 1 \
            else (np.arange(1), np.arange(1))
        names["val"] = [names["train"][i] for i in va]
        names["train"] = [names["train"][i] for i in tr]
    every = [v for s in ("train", "val", "test") for v in names[s]]
    feats = surgery_frame_features(model, ds, every, _cache(cfg, out) / "surgery", cfg.fps, 8 * cfg.batch_size)
    phase = cfg.task == "phase"
    classes = list(ds.phases if phase else ds.tools)
    data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for v in every:
        times, f = feats[v]
        gt = ds.phases_at(v, times) if phase else ds.tools_at(v, times)
        keep = gt >= 0 if phase else (gt >= 0).all(1)
        data[v] = (times[keep], surgery_embeddings(model, f, cfg.surgery_clip_frames)[keep], gt[keep])
    log.info("probe %s: videos train %d, val %d, test %d", cfg.task, *(len(names[s]) for s in ("train", "val", "test")))

    def stack(vs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([data[v][1] for v in vs]), np.concatenate([data[v][2] for v in vs])

    xv, yv = stack(names["val"])
    test = names["test"]
    exceptions = cfg.dataset == "cholec80"

    def score(probs: list[np.ndarray]) -> dict[str, float]:
        if phase:
            pairs = [(data[v][2], p.argmax(1)) for v, p in zip(test, probs)]
            s, r = strict_phase_metrics(pairs), relaxed_phase_metrics(pairs, len(classes), cfg.fps, 10.0, exceptions)
            return {"strict_accuracy": s["accuracy"], "strict_macro_f1": s["macro_f1"],
                    "relaxed_accuracy": r["accuracy"], "relaxed_jaccard": r["jaccard"]}
        return {"map": tool_average_precision(np.concatenate([data[v][2] for v in test]), np.concatenate(probs))["map"]}

    def fit(x: np.ndarray, y: np.ndarray):
        return (fit_logistic(x, y, xv, yv, len(classes), cfg.cs) if phase else fit_multilabel(x, y, xv, yv, cfg.cs))

    def probe_on_videos(units: np.ndarray, seed: int) -> dict[str, float]:
        probe = fit(*stack([names["train"][i] for i in units]))
        return score([probe.predict(data[v][1]) for v in test])

    def tcn_on_videos(units: np.ndarray, seed: int) -> dict[str, float]:
        return score(_tcn(cfg, [data[names["train"][i]] for i in units], [data[v] for v in names["val"]],
                          [data[v][1] for v in test], len(classes), phase, seed)[0])

    key = "strict_accuracy" if phase else "map"
    unit_y = np.zeros(len(names["train"]), dtype=np.int64)  # video-level fractions: one stratum
    fractions, _ = _curves(cfg, unit_y, probe_on_videos, key, kshot=False)
    shots = {}
    if phase and cfg.kshots:
        x_all, y_all = stack(names["train"])
        for k in cfg.kshots:
            runs = []
            for s in cfg.seeds:
                idx = k_shot(y_all, k, s)
                runs.append(score([fit(x_all[idx], y_all[idx]).predict(data[v][1]) for v in test]))
            shots[str(k)] = {m: mean_sd([r[m] for r in runs]) for m in runs[0]}
    probe = fit(*stack(names["train"]))
    probe_probs = [probe.predict(data[v][1]) for v in test]
    results: dict[str, Any] = {"probe": {**score(probe_probs), "C": probe.param, "validation": probe.val_score}}
    curves = {"linear probe": [fractions[f"{f:g}"][key] for f in cfg.fractions]}
    cols: dict[str, list[np.ndarray]] = {"probe": probe_probs}
    if cfg.temporal_head:
        tcn_fr, _ = _curves(cfg, unit_y, tcn_on_videos, key, kshot=False)
        probs, val_score = _tcn(cfg, [data[v] for v in names["train"]], [data[v] for v in names["val"]],
                                [data[v][1] for v in test], len(classes), phase, cfg.seeds[0])
        results["temporal_head"] = {**score(probs), "validation": val_score, "label_fractions": tcn_fr}
        curves["temporal head (dilated TCN)"] = [tcn_fr[f"{f:g}"][key] for f in cfg.fractions]
        cols["tcn"] = probs
    y_train = stack(names["train"])[1]
    lines: dict[str, float] = {}
    if phase:
        majority = np.bincount(y_train, minlength=len(classes)).argmax()
        results["majority_class"] = score([np.eye(len(classes))[np.full(len(data[v][2]), majority)] for v in test])
        results["chance"] = {"strict_accuracy": 1.0 / len(classes)}
        lines["chance (1/C)"] = 1.0 / len(classes)
    else:
        y_test = np.concatenate([data[v][2] for v in test])
        prevalence = [y_test[:, j].mean() for j in range(len(classes)) if y_test[:, j].any()]
        results["chance"] = {"map": float(np.mean(prevalence))}
        lines["chance (prevalence)"] = results["chance"]["map"]
    if cfg.zero_shot:
        zs = _surgery_zero_shot(cfg, model, [data[v][1] for v in test], classes)
        results["zero_shot"] = score(zs)
        lines["zero-shot"] = results["zero_shot"][key]
        cols["zero_shot"] = zs
    _surgery_predictions(out, test, data, cols, classes, phase)
    learning_curve(out / "learning_curve.png", cfg.fractions, curves, lines,
                   "strict accuracy" if phase else "mAP", f"{cfg.task}: {Path(cfg.model).name}")
    headline = {f"{k}_{key}": v[key] for k, v in results.items() if isinstance(v, dict) and key in v}
    return {"headline_metric": key, "headline": headline, "results": results, "label_fractions": fractions,
            "k_shot": shots, "classes": classes, "videos": {s: names[s] for s in ("train", "val", "test")},
            "protocol": (f"{cfg.fps:g} fps embeddings over {cfg.surgery_clip_frames} sample(s); label fractions "
                         "are fractions of training videos; k-shot = k seconds per phase; relaxed metrics with a "
                         "10 s tolerance" + (" and the Cholec80 exceptions" if exceptions else ""))}


def _tcn(cfg: Any, train: list, val: list, test_x: list, n_classes: int, phase: bool,
         seed: int) -> tuple[list[np.ndarray], float]:
    def val_score(probs: list[np.ndarray]) -> float:
        if phase:
            return float(np.mean([np.mean(p.argmax(1) == y) for p, (_, _, y) in zip(probs, val)]))
        return tool_average_precision(np.concatenate([y for _, _, y in val]), np.concatenate(probs))["map"]

    model, best = train_tcn([(x, y) for _, x, y in train], [(x, y) for _, x, y in val], n_classes, val_score,
                            multilabel=not phase, epochs=cfg.tcn_epochs, layers=cfg.tcn_layers, causal=cfg.causal,
                            seed=seed)
    return predict_tcn(model, test_x, multilabel=not phase), best


def _surgery_zero_shot(cfg: Any, model: Any, embs: list[np.ndarray], classes: list[str]) -> list[np.ndarray]:
    name = SURGERY_PROMPTS.get((cfg.dataset, cfg.task))
    path = Path(cfg.prompts) if cfg.prompts else (config_dir() / "prompts" / name if name else None)
    if path is None:
        raise MedvidError(f"no shipped prompts for {cfg.dataset} {cfg.task}; pass prompts=FILE or zero_shot=false")
    prompts = load_prompt_set(path, classes)
    with torch.no_grad():
        encode = model_text_encoder(model)
        head = (PhaseClassifier.from_prompts(prompts, encode, cfg.scale) if cfg.task == "phase"
                else ToolClassifier.from_prompts(prompts, encode, cfg.scale))
        return [head.probs(torch.from_numpy(e)).numpy() for e in embs]


def _surgery_predictions(out: Path, videos: list[str], data: dict, cols: dict[str, list[np.ndarray]],
                         classes: list[str], phase: bool) -> None:
    for i, v in enumerate(videos):
        times, _, gt = data[v]
        frame = {"time_s": times.round(3)}
        if phase:
            frame["gt"] = [classes[g] for g in gt]
            frame.update({name: [classes[j] for j in probs[i].argmax(1)] for name, probs in cols.items()})
        else:
            for j, c in enumerate(classes):
                frame[f"gt_{c}"] = gt[:, j]
                frame.update({f"{name}_{c}": probs[i][:, j].round(4) for name, probs in cols.items()})
        _write_csv(out / "predictions" / f"{v}.csv", pd.DataFrame(frame))
