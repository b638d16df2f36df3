"""``medvid pretrain CONFIG``: contrastive pretraining, echo (study ↔ report) or surgical (clip ↔ speech).

One process, or several under ``torchrun`` (same command). With ``frozen_backbone: true`` frame
features are computed once into a memory-mapped cache and training runs on them (fits a CPU);
``false`` fine-tunes end to end on decoded clips (for GPUs). With ``locked_text: true`` the text
transformer is frozen (its features cached, LiT-style) and only its projection trains.

Writes ``OUT/model/`` (``save_pretrained`` + ``train_config.yaml`` + for echo the learned
section × view attention), ``OUT/config.yaml``, ``OUT/metrics.json``, logs and checkpoints.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from medvid.config import require_dirs, save_config, setting
from medvid.errors import MedvidError
from medvid.runs import TRAINING_BOOKKEEPING, run_settings
from medvid.training.distributed import DistInfo, barrier, cleanup, init_distributed
from medvid.metrics import chance_recall
from medvid.training.evaluate import retrieval_metrics
from medvid.training.feature_cache import FeatureCache, TextFeatureCache, cache_clips
from medvid.training.data import group_splits
from medvid.training.trainer import Trainer, TrainConfig
from medvid.transforms.contract import PretrainedCfg, Sampling
from medvid.device import check_device
from medvid.utils import atomic_write_text, seed_everything

log = logging.getLogger("medvid")

SPLITS = ("train", "val", "test")
NEW_MODEL_SAMPLING = PretrainedCfg(motion="std")  # a new echo model: EchoPrime's sampling plus a motion image


@dataclass
class EchoData:
    ingest_dir: str = setting("", "output of `medvid ingest` (videos.parquet, reports.csv, views.csv)")
    dicom_root: str = setting("", "the DICOM tree that was ingested")
    n_frames: Optional[int] = setting(None, "frames per loop clip; null = init_from's recorded, else 16")
    target_fps: Optional[float] = setting(None, "clip frame rate; null = init_from's recorded, else frame_stride")
    frame_stride: Optional[int] = setting(
        None, "with target_fps null: every Nth native frame; null = init_from's recorded, else 2 (EchoPrime)")
    mask: Optional[str] = setting(
        None, "sector masking fan | box | pixels | none; null = init_from's recorded, else fan")
    motion: Optional[str] = setting(
        None, "motion image as an extra last frame: std | none; null = init_from's recorded, else std")
    max_videos: int = setting(8, "videos per study (a fixed seeded subset when a study has more)")
    view_source: str = setting("known", "known (views.csv; uniform when unknown) | classifier")
    view_classifier: Optional[str] = setting(None, "saved ViewClassifier folder (view_source: classifier)")
    video_weight: float = setting(0.5, "weight of the video–report MIL-NCE term")
    learn_view_table: bool = setting(True, "learn the section × view table (starts from the shipped prior)")
    prior: Optional[str] = setting(None, "section × view prior YAML (null = configs/section_view_prior.yaml)")
    val_fraction: float = setting(0.15, "studies without an ingest split: whole patients held out (seeded)")
    test_fraction: float = setting(0.15, "studies without an ingest split: whole patients held out for test")


@dataclass
class LectureData:
    pairs: str = setting("", "pairs.jsonl from `medvid lectures index`")
    root: str = setting("", "lecture videos root the pairs refer to")
    n_frames: int = setting(4, "frames per lecture clip")
    sample_fps: float = setting(2.0, "frame rate inside a clip")
    max_texts: int = setting(3, "anchor + extra positives kept per clip (MIL-NCE)")
    val_fraction: float = setting(0.15, "whole lectures held out (seeded shuffle of the names)")
    test_fraction: float = setting(0.15, "whole lectures held out for test")


@dataclass
class Config:
    task: str = setting("echo", "echo | surgical")
    out: str = setting("runs/pretrain", "output folder (model/, metrics.json, logs, checkpoints)")
    model: str = setting("medvid-effnetlite0-minilm", "registry name (configs/models) or a model YAML")
    model_overrides: dict[str, Any] = setting(help="any VideoTextConfig field, e.g. {input_size: 112}", factory=dict)
    pretrained: bool = setting(True, "start from the packaged ImageNet / MiniLM weights")
    init_from: Optional[str] = setting(None, "continue from a saved model folder instead")
    frozen_backbone: bool = setting(True, "train on cached frame features (false: fine-tune end to end on clips)")
    locked_text: bool = setting(True, "freeze the text transformer (its features cached); its projection trains")
    cache_dir: Optional[str] = setting(None, "frame-feature cache (null = OUT/cache)")
    cache_batch: int = setting(8, "clips per backbone call while caching")
    eval_batch: int = setting(64, "studies or clips per evaluation batch")
    resume: bool = setting(True, "continue from OUT's last checkpoint when there is one")
    echo: EchoData = setting(help="echo data (task: echo)", factory=EchoData)
    lectures: LectureData = setting(help="lecture data (task: surgical)", factory=LectureData)
    train: TrainConfig = setting(help="training loop", factory=TrainConfig)


# --------------------------------------------------------------------------- model


def build_model(cfg: Config):
    from medvid.models.clip import VideoTextModel
    from medvid.models.factory import create_model, model_config

    if cfg.init_from:
        model = VideoTextModel.from_pretrained(cfg.init_from)
    else:
        mc = model_config(cfg.model, cfg.pretrained)
        model = create_model(OmegaConf.merge(mc, OmegaConf.create(dict(cfg.model_overrides))))
    if cfg.frozen_backbone:
        model.freeze_backbone()
    if cfg.locked_text:
        model.freeze_text()
    return model


def _cache(cfg: Config, dist: DistInfo, model, dataset: Dataset, keys: list[str], name: str,
           fingerprint: dict[str, Any], n_frames: int) -> FeatureCache:
    """Build (rank 0) or open the frame-feature cache of ``dataset`` under ``cache_dir/name``."""
    directory = Path(cfg.cache_dir or Path(cfg.out) / "cache") / name
    return cache_clips(model.video.backbone, model.video.feature_dim, dataset, keys, directory,
                       {**fingerprint, "preprocess": model.pretrained_cfg.to_dict()}, n_frames=n_frames,
                       batch_size=cfg.cache_batch, num_workers=cfg.train.num_workers, device=dist.device,
                       progress=cfg.train.progress)


def _text_source(cfg: Config, model, texts: list[str]):
    from medvid.training.data import TokenSource, text_tower_features

    if cfg.locked_text:
        return TextFeatureCache(lambda t: text_tower_features(model, t), texts)
    return TokenSource(model.tokenize, model.text.max_length)


# --------------------------------------------------------------------------- echo


def _echo(cfg: Config, dist: DistInfo, model) -> tuple[torch.nn.Module, dict[str, Dataset], Callable]:
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.models.aggregate import ViewInformedAttention, load_section_view_prior
    from medvid.training.data import ClipSource, EchoStudyFeatures, load_echo_studies
    from medvid.training.objectives import EchoContrastive, section_scores
    from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

    e = cfg.echo
    studies = load_echo_studies(e.ingest_dir, e.val_fraction, e.test_fraction, cfg.train.seed)
    if not studies:
        raise MedvidError(f"{e.ingest_dir}: no study with a report (reports.csv joined at ingest)")
    # sampling: the settings given, else what init_from recorded, else EchoPrime's with a motion image (which
    # carries wall-motion amplitude past a frozen backbone: docs/BENCHMARKS.md); written back as used
    s = Sampling.recorded(model.pretrained_cfg if cfg.init_from else NEW_MODEL_SAMPLING, e.n_frames, e.target_fps,
                          e.frame_stride, e.mask, motion=e.motion)
    e.n_frames, e.target_fps, e.frame_stride, e.mask, e.motion = s.num_frames, s.fps, s.frame_stride, s.mask, s.motion
    videos = EchoVideoDataset.for_model(e.ingest_dir, e.dicom_root, model, s,
                                        start="begin" if cfg.frozen_backbone else "random", seed=cfg.train.seed)
    keys = videos.videos["video_key"].tolist()
    if cfg.frozen_backbone:
        fp = {"task": "echo", "target_fps": s.fps, "frame_stride": s.frame_stride, "mask": s.mask, "motion": s.motion}
        source: Any = _cache(cfg, dist, model, videos, keys, "echo", fp, s.clip_frames)
    else:
        source = ClipSource(videos, keys)
    view_probs = _view_probs(cfg, model, source)
    texts = [t for s in studies for t in (s.report, *s.sections.values())]
    text_source = _text_source(cfg, model, texts)
    attention = ViewInformedAttention(ECHO_SECTIONS, ECHO_VIEWS, load_section_view_prior(e.prior),
                                      learnable=e.learn_view_table)
    objective = EchoContrastive(model, attention, e.video_weight)
    splits = {sp: EchoStudyFeatures([s for s in studies if s.split == sp], source, text_source, view_probs,
                                    e.max_videos, seed=cfg.train.seed) for sp in SPLITS}

    def evaluate(module: EchoContrastive, data: Dataset) -> dict[str, float]:
        parts = [(module.embed(_to(b, dist.device)), b["section_mask"]) for b in _batches(data, cfg.eval_batch)]
        study = torch.cat([p[0]["study"] for p in parts])
        sections = torch.cat([p[0]["sections"] for p in parts])
        mask = torch.cat([p[1] for p in parts]).to(study.device)
        return retrieval_metrics(None, None, sim=section_scores(study, sections, mask))

    return objective, splits, evaluate


def _view_probs(cfg: Config, model, source) -> Callable[[str, Optional[str]], torch.Tensor]:
    from medvid.training.data import known_view_probs

    if cfg.echo.view_source == "known":
        return lambda key, view: known_view_probs(view)
    if cfg.echo.view_source != "classifier":
        raise MedvidError(f"echo.view_source must be known or classifier, got {cfg.echo.view_source!r}")
    from medvid.models.view import ViewClassifier
    from medvid.vocab import ECHO_VIEWS

    if not cfg.echo.view_classifier:
        raise MedvidError("echo.view_source=classifier needs echo.view_classifier (a saved ViewClassifier folder)")
    clf = ViewClassifier.from_pretrained(cfg.echo.view_classifier).eval()
    if list(clf.labels) != list(ECHO_VIEWS):
        raise MedvidError(f"{cfg.echo.view_classifier}: labels {clf.labels} are not the echo views")
    if not isinstance(source, FeatureCache):
        raise MedvidError("echo.view_source=classifier runs the classifier head on cached frame features: "
                          "it needs frozen_backbone: true")
    mine, theirs = model.video.backbone.state_dict(), clf.backbone.state_dict()
    if mine.keys() != theirs.keys() or any(not torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine):
        raise MedvidError(f"{cfg.echo.view_classifier}: its backbone differs from the video backbone, so the cached "
                          "features do not fit it; train it with `medvid train-views` (frozen backbone) "
                          "or use echo.view_source=known")
    probs: dict[str, torch.Tensor] = {}

    def lookup(key: str, view: Optional[str]) -> torch.Tensor:
        if key not in probs:
            feats, mask = source[key]
            n = cfg.echo.n_frames  # the classifier never saw the motion image
            with torch.no_grad():
                probs[key] = clf.classify_features(feats[None, :n], mask[None, :n]).softmax(-1)[0]
        return probs[key]

    return lookup


# --------------------------------------------------------------------------- surgical


def _surgical(cfg: Config, dist: DistInfo, model) -> tuple[torch.nn.Module, dict[str, Dataset], Callable]:
    from medvid.datasets.lectures import LecturePairDataset
    from medvid.training.data import ClipSource, LecturePairFeatures
    from medvid.training.objectives import LectureContrastive

    lc = cfg.lectures
    clips = LecturePairDataset(lc.pairs, lc.root, num_frames=lc.n_frames, fps=lc.sample_fps,
                               preprocess=model.preprocess(), seed=cfg.train.seed,
                               random_start=not cfg.frozen_backbone)
    rows = clips.pairs  # one copy of the pair table (about 4.6 kB a pair in Python objects)
    if not rows:
        raise MedvidError(f"{lc.pairs}: no pairs")
    keys = [r["pair_id"] for r in rows]
    if cfg.frozen_backbone:
        fp = {"task": "surgical", "sample_fps": lc.sample_fps}
        source: Any = _cache(cfg, dist, model, clips, keys, "lectures", fp, lc.n_frames)
    else:
        source = ClipSource(clips, keys)
    pairs: dict[str, list] = {sp: [] for sp in SPLITS}
    split_of = group_splits([r["video"] for r in rows], lc.val_fraction, lc.test_fraction, cfg.train.seed)
    for r in rows:
        pairs[split_of[r["video"]]].append(
            (r["pair_id"], [r["text"], *r.get("extra_texts", [])]))
    text_source = _text_source(cfg, model, [t for sp in pairs.values() for _, ts in sp for t in ts])
    splits = {sp: LecturePairFeatures(p, source, text_source, lc.max_texts) for sp, p in pairs.items()}

    def evaluate(module: LectureContrastive, data: Dataset) -> dict[str, float]:
        parts = [module.embed(_to(b, dist.device)) for b in _batches(data, cfg.eval_batch)]
        video = torch.cat([p[0] for p in parts])
        anchor = torch.cat([p[1][:, 0] for p in parts])  # the anchor sentence of each clip
        return retrieval_metrics(video, anchor)

    return LectureContrastive(model), splits, evaluate


# --------------------------------------------------------------------------- job


def _batches(data: Dataset, batch_size: int):
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _eval(objective: torch.nn.Module, evaluate: Callable, data: Dataset) -> dict[str, float]:
    if len(data) < 2:
        return {}
    was = objective.training
    objective.eval()
    with torch.no_grad():
        out = evaluate(objective, data)
    objective.train(was)
    return {**out, "n": len(data), "chance_recall@5": chance_recall(len(data), 5)}


def _check_inputs(cfg: Config) -> None:
    """Refuse a wrong task, missing inputs or an unusable device before any model is built."""
    if cfg.task not in ("echo", "surgical"):
        raise MedvidError(f"task must be echo or surgical, got {cfg.task!r}")
    if cfg.task == "echo":
        require_dirs(**{"echo.ingest_dir": cfg.echo.ingest_dir, "echo.dicom_root": cfg.echo.dicom_root})
    else:
        require_dirs(**{"lectures.root": cfg.lectures.root})
        if not cfg.lectures.pairs or not Path(cfg.lectures.pairs).is_file():
            raise MedvidError(f"lectures.pairs does not exist (pairs.jsonl from `medvid lectures index`): "
                              f"{cfg.lectures.pairs!r}")
    if cfg.init_from and not Path(cfg.init_from).is_dir():
        raise MedvidError(f"init_from does not exist or is not a folder: {cfg.init_from}")
    check_device(cfg.train.device)


def run(cfg: Config) -> dict[str, Any]:
    """Pretrain, evaluate on the held-out splits (and the untrained model, for reference), save."""
    _check_inputs(cfg)
    dist = init_distributed(cfg.train.device)
    out = Path(cfg.out)
    try:
        seed_everything(cfg.train.seed)
        model = build_model(cfg)
        objective, splits, evaluate = (_echo if cfg.task == "echo" else _surgical)(cfg, dist, model)
        objective.to(dist.device)
        if len(splits["train"]) < cfg.train.batch_size:
            raise MedvidError(f"{len(splits['train'])} training items, fewer than train.batch_size="
                              f"{cfg.train.batch_size}")
        if dist.is_main:
            save_config(cfg, out / "config.yaml")
        untrained = _eval(objective, evaluate, splits["test"]) if dist.is_main else {}
        trainer = Trainer(objective, splits["train"], _loop_config(cfg, dist), out, dist_info=dist,
                          evaluate=(lambda m: _eval(m, evaluate, splits["val"])) if len(splits["val"]) > 1 else None,
                          settings=run_settings(cfg, TRAINING_BOOKKEEPING))
        summary = trainer.fit(resume=cfg.resume)
        result: dict[str, Any] = {"task": cfg.task, "out": str(out), "steps": summary["step"],
                                  "final_loss": summary["final_loss"],
                                  "items": {sp: len(d) for sp, d in splits.items()}}
        if dist.is_main:
            result["test"] = _eval(objective, evaluate, splits["test"])
            result["test_untrained"] = untrained
            result["val"] = {k[4:]: v for k, v in summary.items() if k.startswith("val/")}
            _save(cfg, objective, out, result)
            atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
        barrier()
        return result if dist.is_main else {}  # one summary per job, not per rank
    finally:
        cleanup()


def _loop_config(cfg: Config, dist: DistInfo) -> TrainConfig:
    """``cfg.train`` with ``num_threads: 0`` resolved: on a CPU, one thread when training on cached features
    (the trainable head's small matrix products gain less from a second thread than its synchronisation
    costs: docs/BENCHMARKS.md, training), torch's default otherwise."""
    if cfg.train.num_threads or dist.device.type != "cpu" or not cfg.frozen_backbone:
        return cfg.train
    return OmegaConf.merge(cfg.train, {"num_threads": 1})


def _save(cfg: Config, objective: torch.nn.Module, out: Path, result: Optional[dict[str, Any]] = None) -> None:
    from medvid.models.aggregate import view_attention_dir
    from medvid.models.card import TrainingRecord, recipe_from, retrieval_rows
    from medvid.models.checkpoint import record_training_input

    model_dir = out / "model"
    e = cfg.echo
    if cfg.task == "echo":  # the input contract as trained, not the model YAML's defaults
        record_training_input(objective.model, Sampling.recorded(objective.model.pretrained_cfg, e.n_frames,
                                                                 e.target_fps, e.frame_stride, e.mask, motion=e.motion))
    else:
        record_training_input(objective.model, Sampling(cfg.lectures.n_frames, cfg.lectures.sample_fps, mask="none"))
    data = ("echo studies (videos + report sections) of an ingest folder" if cfg.task == "echo"
            else "surgical lecture clips paired with transcript sentences")
    extra = ("echo.n_frames", "echo.frame_stride", "echo.target_fps", "echo.mask", "echo.motion", "echo.max_videos") \
        if cfg.task == "echo" else ("lectures.n_frames", "lectures.sample_fps", "lectures.max_texts")
    record = TrainingRecord(command="medvid pretrain train_config.yaml  # in this folder", data=data,
                            counts=(result or {}).get("items", {}), recipe=recipe_from(cfg, *extra),
                            evaluation=retrieval_rows((result or {}).get("test", {})))
    objective.model.save_pretrained(model_dir, record)
    save_config(cfg, model_dir / "train_config.yaml")
    attention = getattr(objective, "attention", None)
    if attention is not None:  # the learned section × view table, for study-level embedding downstream
        attention.save_pretrained(view_attention_dir(model_dir))
