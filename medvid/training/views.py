"""Supervised echo view classification: its settings, the labelled loops of an ingest folder (``views.csv`` or
the ``view`` column), the frozen-backbone cache step, scoring (accuracy, balanced accuracy, confusion) and the
saved classifier's card record. ``medvid train-views`` (``pipelines/train_views.py``) wires these."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.training.data import SPLITS, group_splits
from medvid.training.feature_cache import cache_clips
from medvid.training.trainer import TrainConfig
from medvid.transforms.contract import PretrainedCfg, Sampling
from medvid.utils import atomic_path



@dataclass
class ViewSettings:
    """Everything a view-classifier training run depends on (the ``medvid train-views`` config)."""

    ingest_dir: str = setting("", "`medvid ingest ROOT --out DIR views=views.csv` output")
    dicom_root: str = setting("", "ROOT given to ingest")
    views: Optional[str] = setting(None, "views CSV keyed by video_key (null = DIR/views.csv, else videos.parquet)")
    out: str = setting("runs/view_classifier", "output folder (model/, metrics.json, confusion tables, logs)")
    model: str = setting("view-effnetlite0-echo", "configs/models/<name>.yaml or a YAML path")
    model_overrides: dict[str, Any] = setting(help="any ViewClassifierConfig field, e.g. {input_size: 112}",
                                              factory=dict)
    pretrained: bool = setting(True, "start from the packaged ImageNet backbone weights (false: random init)")
    frozen_backbone: bool = setting(True, "train the head on cached frame features (false: fine-tune end to end)")
    init_from: Optional[str] = setting(
        None, "continue from a saved view classifier folder (its architecture and input contract)")
    n_frames: Optional[int] = setting(None, "frames per loop (logits averaged); null = init_from's recorded, else 4")
    target_fps: Optional[float] = setting(None, "clip frame rate; null = init_from's recorded, else frame_stride")
    frame_stride: Optional[int] = setting(
        None, "with target_fps null: every Nth native frame; null = init_from's recorded, else 4")
    mask: Optional[str] = setting(
        None, "sector masking fan | box | pixels | none; null = init_from's recorded, else fan")
    balanced: bool = setting(True, "class-balanced sampling")
    val_fraction: float = setting(0.15, "loops without an ingest split: whole patients held out (seeded)")
    test_fraction: float = setting(0.15, "loops without an ingest split: whole patients held out for test")
    cache_dir: Optional[str] = setting(None, "frame-feature cache (null = OUT/cache)")
    cache_batch: int = setting(8, "clips per backbone call while caching")
    eval_batch: int = setting(128, "loops per evaluation batch")
    resume: bool = setting(True, "continue from OUT's last checkpoint when there is one")
    train: TrainConfig = setting(help="training loop", factory=TrainConfig)


def read_view_labels(cfg: ViewSettings) -> pd.DataFrame:
    """``video_key, view, split`` for every ingested loop with a known view."""
    from medvid.io.ingest_folder import IngestFolder
    from medvid.io.reports import read_views

    videos = IngestFolder(cfg.ingest_dir).read_videos()
    path = Path(cfg.views) if cfg.views else IngestFolder(cfg.ingest_dir).views
    if cfg.views or path.is_file():
        labels = read_views(path, key="video_key")
        videos = videos.drop(columns="view").merge(labels, on="video_key", how="inner")
    videos = videos[videos["view"] != ""].reset_index(drop=True)
    unsplit = ~videos["split"].isin(SPLITS)
    if unsplit.any():  # no reports.csv split at ingest: hold out whole patients (else studies), never single loops
        group = videos["patient_key"].where(videos["patient_key"] != "", videos["study_key"])[unsplit]
        split_of = group_splits(group, cfg.val_fraction, cfg.test_fraction, cfg.train.seed)
        videos.loc[unsplit, "split"] = group.map(split_of)
    return videos[["video_key", "view", "split"]]


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    return sk_confusion(y, pred, labels=list(range(n)))


def _predict(objective, data: Dataset, batch: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    ys, ps = [], []
    for b in DataLoader(data, batch_size=batch, shuffle=False):
        b = {k: v.to(device) for k, v in b.items()}
        ps.append(objective.logits(b).argmax(-1).cpu())
        ys.append(b["label"].cpu())
    return torch.cat(ys).numpy(), torch.cat(ps).numpy()


def scores(objective, data: Dataset, n_classes: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean per-class recall over present classes) and the confusion matrix."""
    y, p = _predict(objective, data, batch, device)
    cm = confusion_matrix(y, p, n_classes)
    support = cm.sum(1)
    recall = np.diag(cm)[support > 0] / support[support > 0]
    return {"accuracy": float((y == p).mean()), "balanced_accuracy": float(recall.mean()), "n": int(len(y)),
            "confusion": cm.tolist()}


def training_record(cfg: ViewSettings, result: dict[str, Any]):
    """What the saved classifier's card says: loops per split, recipe, held-out accuracy beside the majority view."""
    from medvid.models.card import EvalRow, TrainingRecord, recipe_from

    rows = []
    for sp in ("val", "test"):
        if sp in result:
            support = np.asarray(result[sp]["confusion"]).sum(1)
            rows += [EvalRow("accuracy", result[sp]["accuracy"], float(support.max() / support.sum()), "majority label",
                             sp, result[sp]["n"]),
                     EvalRow("balanced accuracy", result[sp]["balanced_accuracy"], 1 / max(1, int((support > 0).sum())),
                             "chance", sp, result[sp]["n"])]
    return TrainingRecord(command="medvid train-views --config train_config.yaml  # in this folder",
                          data="labelled loops (views.csv) of an ingest folder", counts=result["items"],
                          recipe=recipe_from(cfg, "n_frames", "frame_stride", "target_fps", "mask", "balanced"),
                          evaluation=rows)


NEW_MODEL_SAMPLING = PretrainedCfg(num_frames=4, frame_stride=4, mask="fan")  # a new classifier: 4 frames, every 4th


def sampling(cfg: ViewSettings, clf) -> Sampling:
    """The loops' sampling: the job's settings where given, else what ``init_from`` recorded (``pretrained_cfg``),
    else ``NEW_MODEL_SAMPLING``."""
    return Sampling.recorded(clf.pretrained_cfg if cfg.init_from else NEW_MODEL_SAMPLING, cfg.n_frames,
                             cfg.target_fps, cfg.frame_stride, cfg.mask)


def build_classifier(cfg: ViewSettings):
    """A new classifier from the registry, or ``init_from``'s saved one as it is."""
    from omegaconf import OmegaConf

    from medvid.models.factory import create_view_classifier, view_classifier_config
    from medvid.models.view import ViewClassifier

    if not cfg.init_from:
        return create_view_classifier(OmegaConf.merge(view_classifier_config(cfg.model, cfg.pretrained),
                                                      OmegaConf.create(dict(cfg.model_overrides))))
    if cfg.model_overrides:
        raise MedvidError("init_from continues a saved classifier as it is: drop model_overrides")
    return ViewClassifier.from_pretrained(cfg.init_from)


def view_splits(cfg: ViewSettings, clf, s: Sampling, device: torch.device) -> dict[str, Dataset]:
    """The labelled loops of each split as ``(features or clip, label index)`` items, sampled by ``s``; with a frozen
    backbone its frame features are cached first under ``cache_dir/views`` (null = ``OUT/cache``)."""
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.training.data import ClipSource, LabelledClips

    labels_df = read_view_labels(cfg)
    unknown = sorted(set(labels_df["view"]) - set(clf.labels))
    if unknown:
        raise MedvidError(f"views {unknown} are not among the classifier's labels {clf.labels}")
    if labels_df.empty:
        raise MedvidError(f"{cfg.ingest_dir}: no loop has a view label")
    videos = EchoVideoDataset.for_model(cfg.ingest_dir, cfg.dicom_root, clf, s,
                                        start="begin" if cfg.frozen_backbone else "random", seed=cfg.train.seed)
    wanted = set(labels_df["video_key"])
    rows = [i for i, k in enumerate(videos.videos["video_key"]) if k in wanted]
    labelled = Subset(videos, rows)
    keys = [videos.videos["video_key"].iloc[i] for i in rows]
    if cfg.frozen_backbone:
        source: Any = cache_clips(
            clf.backbone, clf.feature_dim, labelled, keys, Path(cfg.cache_dir or Path(cfg.out) / "cache") / "views",
            {"task": "views", "target_fps": s.fps, "frame_stride": s.frame_stride, "mask": s.mask,
             "preprocess": clf.pretrained_cfg.to_dict()}, n_frames=s.clip_frames, batch_size=cfg.cache_batch,
            num_workers=cfg.train.num_workers, device=device, progress=cfg.train.progress)
    else:
        source = ClipSource(labelled, keys)
    index = {v: i for i, v in enumerate(clf.labels)}
    return {sp: LabelledClips([(k, index[v]) for k, v, s in labels_df[["video_key", "view", "split"]]
                               .itertuples(index=False) if s == sp], source) for sp in SPLITS}


def write_confusion(path: Path, cm: list[list[int]], labels: list[str]) -> None:
    """The confusion matrix as CSV, true labels down, predicted across."""
    df = pd.DataFrame(cm, index=pd.Index(labels, name="true \\ predicted"), columns=labels)
    with atomic_path(path) as tmp:
        df.to_csv(tmp)
