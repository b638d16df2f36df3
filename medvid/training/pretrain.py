"""Contrastive pretraining, echo (study ↔ report) or surgical (clip ↔ speech): its settings, the data and
objective of each task, the frozen-backbone cache step, the loop settings and the saved model.

``medvid pretrain`` (``pipelines/pretrain.py``) wires these: build the model, set up the task, train it with
:class:`~medvid.training.trainer.Trainer`, score the held-out splits, save.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from medvid.config import save_config, setting
from medvid.errors import MedvidError
from medvid.metrics import chance_recall
from medvid.training.data import SPLITS, group_splits
from medvid.training.evaluate import retrieval_metrics
from medvid.training.feature_cache import FeatureCache, TextFeatureCache, cache_clips
from medvid.training.trainer import TrainConfig
from medvid.transforms.contract import PretrainedCfg, Sampling

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
    alignment: str = setting("mil", "mil: MIL-NCE | ot: noisy-correspondence MIL-NCE (optimal transport with a learnt "
                                    "\"no match\" for speech that shows nothing; docs/zero_shot.md)")
    val_fraction: float = setting(0.15, "whole lectures held out (seeded shuffle of the names)")
    test_fraction: float = setting(0.15, "whole lectures held out for test")


@dataclass
class PretrainSettings:
    """Everything a pretraining run depends on (the ``medvid pretrain`` config)."""

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


@dataclass
class PretrainTask:
    """A task ready to train: the objective (holding the model), its splits and its retrieval scoring."""

    objective: torch.nn.Module
    splits: dict[str, Dataset]
    evaluate: Callable[[torch.nn.Module, Dataset], dict[str, float]]

    def score(self, data: Dataset) -> dict[str, float]:
        """Retrieval metrics of the objective on ``data`` (with its size and chance recall@5); ``{}`` under 2 items."""
        if len(data) < 2:
            return {}
        was = self.objective.training
        self.objective.eval()
        with torch.no_grad():
            out = self.evaluate(self.objective, data)
        self.objective.train(was)
        return {**out, "n": len(data), "chance_recall@5": chance_recall(len(data), 5)}


def build_model(cfg: PretrainSettings):
    """The model to train: ``init_from``'s saved one or a new one from the registry, with the frozen parts frozen."""
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


def pretrain_task(cfg: PretrainSettings, device: torch.device, model) -> PretrainTask:
    """The task ``cfg.task`` names, set up on ``model`` (frame features cached first with a frozen backbone)."""
    return (echo_task if cfg.task == "echo" else surgical_task)(cfg, device, model)


def _cache(cfg: PretrainSettings, device: torch.device, model, dataset: Dataset, keys: list[str], name: str,
           fingerprint: dict[str, Any], n_frames: int) -> FeatureCache:
    """Build (rank 0) or open the frame-feature cache of ``dataset`` under ``cache_dir/name``."""
    directory = Path(cfg.cache_dir or Path(cfg.out) / "cache") / name
    return cache_clips(model.video.backbone, model.video.feature_dim, dataset, keys, directory,
                       {**fingerprint, "preprocess": model.pretrained_cfg.to_dict()}, n_frames=n_frames,
                       batch_size=cfg.cache_batch, num_workers=cfg.train.num_workers, device=device,
                       progress=cfg.train.progress)


def _text_source(cfg: PretrainSettings, model, texts: list[str]):
    from medvid.training.data import TokenSource, text_tower_features

    if cfg.locked_text:
        return TextFeatureCache(lambda t: text_tower_features(model, t), texts)
    return TokenSource(model.tokenize, model.text.max_length)


def _batches(data: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def echo_task(cfg: PretrainSettings, device: torch.device, model) -> PretrainTask:
    """Echo studies ↔ report sections through the section × view attention. Writes the sampling used back
    into ``cfg.echo`` (so the run's recorded settings say what was trained on)."""
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
        source: Any = _cache(cfg, device, model, videos, keys, "echo", fp, s.clip_frames)
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
        parts = [(module.embed(_to(b, device)), b["section_mask"]) for b in _batches(data, cfg.eval_batch)]
        study = torch.cat([p[0]["study"] for p in parts])
        sections = torch.cat([p[0]["sections"] for p in parts])
        mask = torch.cat([p[1] for p in parts]).to(study.device)
        return retrieval_metrics(None, None, sim=section_scores(study, sections, mask))

    return PretrainTask(objective, splits, evaluate)


def _view_probs(cfg: PretrainSettings, model, source) -> Callable[[str, Optional[str]], torch.Tensor]:
    """Each video's view probabilities: its known view (uniform when unknown) or a view classifier's output."""
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


def surgical_task(cfg: PretrainSettings, device: torch.device, model) -> PretrainTask:
    """Lecture clips ↔ their transcript sentences (MIL-NCE), whole lectures held out."""
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
        source: Any = _cache(cfg, device, model, clips, keys, "lectures", fp, lc.n_frames)
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
        parts = [module.embed(_to(b, device)) for b in _batches(data, cfg.eval_batch)]
        video = torch.cat([p[0] for p in parts])
        anchor = torch.cat([p[1][:, 0] for p in parts])  # the anchor sentence of each clip
        return retrieval_metrics(video, anchor)

    return PretrainTask(LectureContrastive(model, lc.alignment), splits, evaluate)


def loop_config(cfg: PretrainSettings, device: torch.device) -> TrainConfig:
    """``cfg.train`` with ``num_threads: 0`` resolved: on a CPU, one thread when training on cached features
    (the trainable head's small matrix products gain less from a second thread than its synchronisation
    costs: docs/BENCHMARKS.md, training), torch's default otherwise."""
    if cfg.train.num_threads or device.type != "cpu" or not cfg.frozen_backbone:
        return cfg.train
    return OmegaConf.merge(cfg.train, {"num_threads": 1})


def save_model(cfg: PretrainSettings, objective: torch.nn.Module, out: Path,
               result: Optional[dict[str, Any]] = None) -> None:
    """Write ``out/model/``: the trained model with the input contract it was trained on and its card record,
    ``train_config.yaml`` and, for echo, the learned section × view table (the ``view_attention`` kind)."""
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
