"""Echo study encoding, shared by ``medvid bank build|calibrate`` and ``medvid draft``.

Per study: every loop is decoded once (DataLoader workers, :class:`LoopClips`), its frames go through the
frozen backbone once — shared by the view classifier when both carry the same backbone weights and input
contract — then the temporal module gives the video embedding and the classifier head the view
probabilities (a view known from ``views.csv`` wins). A model that embeds whole clips (an imported
EchoPrime) takes the clip instead of its frames (:func:`embedding_path`). The learned section x view
attention turns the videos into one study embedding per report section (:class:`EncodedStudy`).
How loops are read and encoded is one settings object, :class:`Encoding` (the ``encoding:`` key of both jobs).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medvid.config import setting
from medvid.device import resolve_precision
from medvid.errors import MedvidError
from medvid.training.data import known_view_probs
from medvid.transforms.clip import motion_frames
from medvid.transforms.contract import Sampling

log = logging.getLogger("medvid")


@dataclass
class Encoding:
    """How loops are read and encoded (the ``encoding:`` settings of ``medvid bank`` and ``medvid draft``)."""

    n_frames: Optional[int] = setting(None, "frames per loop; null = what the model was trained with (pretrained_cfg)")
    frame_stride: Optional[int] = setting(
        None, "native-frame stride; with target_fps also null: the model's recorded sampling, else every 2nd frame "
              "(EchoPrime)")
    target_fps: Optional[float] = setting(None, "frames per second the loop is resampled to; null: see frame_stride")
    mask: Optional[str] = setting(None, "sector masking fan | box | pixels | none; null = the model's recorded mask, "
                                        "else fan")
    short_clip: Optional[str] = setting(
        None, "loop shorter than the clip: wrap | zero_pad_after_norm; null = the model's (EchoPrime import: zero "
              "pad), else wrap")
    max_videos: Optional[int] = setting(None, "loops per study; null = all")
    loop_batch: int = setting(16, "loops per backbone call")
    num_workers: int = setting(1, "DataLoader workers decoding ahead of the model (0 = decode in the main process)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    precision: str = setting("auto", "frame backbone: auto (bf16 where the CPU/GPU has native bf16, else fp32) | "
                                     "fp32 | bf16")
    feature_cache: Optional[str] = setting(
        None, "frozen-backbone frame-feature cache to reuse instead of decoding (e.g. pretrain OUT/cache/echo); "
              "must match backbone and sampling")


STAGES = ("decode", "view", "encode", "retrieve", "write")


class StageTimer:
    """Seconds spent per stage of a bank or draft run (``STAGES``; decode = waiting for loader workers,
    retrieve and write are drafting's), for the run summary and ``bench/``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def shares(self) -> dict[str, float]:
        total = sum(self.seconds.values()) or 1.0
        return {s: round(self.seconds.get(s, 0.0) / total, 3) for s in STAGES}


def same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True when two backbones hold identical weights (same keys, equal tensors)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


_PREPROCESS_KEYS = ("input_size", "crop", "zoom", "mean", "std")
FRAME_METHODS = ("encode_frames", "encode_video_from_features")  # frame features pooled over time
CLIP_METHODS = ("encode_clips",)                                  # whole clips in (e.g. EchoPrime's mViT)


def _kind_name(model: torch.nn.Module) -> str:
    return getattr(type(model), "checkpoint_kind", "") or type(model).__name__


def embedding_path(model: torch.nn.Module) -> str:
    """How ``model`` embeds one echo clip for drafting and banks: ``frames`` (a per-frame backbone, then a
    temporal module: ``FRAME_METHODS``, e.g. ``video_text``, ``surgvlp``) or ``clips`` (``CLIP_METHODS``,
    e.g. ``echoprime_video``). Any other kind is a ``MedvidError`` naming it and what is needed."""
    if all(callable(getattr(model, m, None)) for m in FRAME_METHODS):
        return "frames"
    if all(callable(getattr(model, m, None)) for m in CLIP_METHODS):
        return "clips"
    raise MedvidError(
        f"a '{_kind_name(model)}' model ({type(model).__name__}) gives no clip embedding, so it cannot draft reports "
        f"or build a report bank: that needs a video embedding model ({' + '.join(FRAME_METHODS)}, as medvid pretrain's "
        f"video_text and the surgvlp kind; or {', '.join(CLIP_METHODS)}, as an imported echoprime_video). "
        "Measurement models (EchoNet-Dynamic's EF regressor, PanEcho's task heads) predict values, not embeddings")


def fold_batchnorm(module: torch.nn.Module) -> int:
    """Fold each BatchNorm2d (running statistics, eval use only) into the Conv2d registered just before it in
    the same parent — the order timm's and torchvision's CNNs run them — in place: the convolution takes the
    norm's scale and shift, the norm becomes its activation (timm's ``BatchNormAct2d``) or nothing. Returns
    how many were folded. Registration order does not prove data flow: callers check the output."""
    n = 0
    with torch.no_grad():
        for parent in list(module.modules()):
            children = list(parent.named_children())
            for (_, conv), (name, bn) in zip(children, children[1:]):
                if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
                        and bn.running_var is not None and conv.out_channels == bn.num_features):
                    continue
                scale = bn.running_var.add(bn.eps).rsqrt()
                shift = -bn.running_mean * scale
                if bn.affine:
                    scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
                bias = shift if conv.bias is None else conv.bias * scale + shift
                conv.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
                conv.bias = torch.nn.Parameter(bias, requires_grad=False)
                rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
                setattr(parent, name, torch.nn.Sequential(*rest))
                n += 1
    return n


@dataclass
class EncodedStudy:
    """A study ready for retrieval: per-section embeddings and what each video contributed."""

    study_key: str
    video_keys: list[str]
    views: list[str]
    view_confidence: list[float]
    view_source: list[str]
    sections: list[str]
    embeddings: Tensor          # [S, D], L2-normalised, rows in ``sections`` order
    weights: Tensor             # [S, V]
    video_mean: Tensor          # [D] normalised mean video embedding (zero-shot findings)
    left_out: list[dict[str, str]] = field(default_factory=list)  # unreadable loops: {video_key, reason, detail}
    videos: Tensor | None = None  # [V, D] the video embeddings as encoded (raw with ``raw_clips``)


class StudyEncoder:
    """Video model + optional view classifier + section x view attention, on one device.

    ``model`` is any registered kind with a clip embedding (``embedding_path``); ``view_model`` anything
    with ``labels`` that maps clips ``[N,3,T,H,W]`` to logits (``ViewClassifier``, an imported EchoPrime view
    classifier). Frame backbones run with their batch norms folded into the convolutions (kept only when
    the frame features come out the same, ``fold_batchnorm``), in channels-last layout (same numbers,
    faster convolutions on CPUs) and, with ``precision="bf16"``, under bf16 autocast; the temporal
    module, projection and view head stay float32. ``raw_clips``: a clip model's embeddings are kept as the
    model gives them, not normalised (EchoPrime's own drafting weights and normalises them itself).
    """

    raw_clips = False

    def __init__(self, model, attention, view_model=None, device: torch.device | str = "cpu",
                 precision: str = "fp32", raw_clips: bool = False):
        self.device = torch.device(device)
        self.raw_clips = raw_clips
        self.path = embedding_path(model)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.attention = attention.to(self.device).eval()
        self.view_model = view_model.to(self.device).eval() if view_model is not None else None
        self.view_names = list(attention.view_names)
        if view_model is not None and list(getattr(view_model, "labels", [])) != self.view_names:
            raise MedvidError(f"view model labels {getattr(view_model, 'labels', None)} differ from the attention's "
                              f"views {self.view_names}")
        self.shared = (view_model is not None and self.path == "frames" and hasattr(model, "video")
                       and callable(getattr(view_model, "classify_features", None))
                       and same_backbone(model.video.backbone, view_model.backbone)
                       and all(getattr(model.pretrained_cfg, k) == getattr(view_model.pretrained_cfg, k) for k in _PREPROCESS_KEYS))
        if view_model is not None and not self.shared:
            log.info("view model backbone differs from the video backbone: frames are encoded twice")
        self.motion_frames = motion_frames(model.pretrained_cfg.motion or "none")  # clips end with a motion image
        self.backbone_digest = None  # of the weights as saved (a feature cache names them), before folding
        if self.path == "frames":
            if hasattr(self.model, "video"):
                from medvid.training.feature_cache import module_digest

                self.backbone_digest = module_digest(self.model.video.backbone)
            self.model = self._folded(self.model)
            self.model.to(memory_format=torch.channels_last)  # 4-D conv weights only; numbers unchanged

    def _folded(self, model):
        """``model`` with its frame backbone's batch norms folded, when its frame features stay the same."""
        import copy

        folded = copy.deepcopy(model)
        if not fold_batchnorm(folded):
            return model
        size = int(model.pretrained_cfg.input_size or 224)
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.device)
        with torch.inference_mode():
            want, got = model.encode_frames(probe).float(), folded.encode_frames(probe).float()
        if torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max())):
            return folded
        log.info("batch norms not folded: the frame features would change")
        return model

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def needs_view_clips(self) -> bool:
        return self.view_model is not None and not self.shared

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.inference_mode()
    def encode_loops(self, clips: Tensor | None, view_clips: Tensor | None, timer: StageTimer,
                     feats: Tensor | None = None, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Clips ``[N,3,T,H,W]`` (or their cached backbone features ``[N,T,F]`` + ``frame_mask``) -> video
        embeddings ``[N,D]`` and view probabilities ``[N,K]`` (None without a view model)."""
        t0 = time.perf_counter()
        if self.path == "clips":
            with self._autocast():
                emb = self.model.encode_clips(clips.to(self.device), **({"normalize": False} if self.raw_clips else {}))
                emb = emb.float()
        else:
            if feats is None:
                n, _, t = clips.shape[:3]
                frames = clips.to(self.device).permute(0, 2, 1, 3, 4).flatten(0, 1)
                with self._autocast():
                    feats = self.model.encode_frames(frames.contiguous(memory_format=torch.channels_last))
                feats = feats.float().view(n, t, -1)
            else:
                feats, frame_mask = feats.to(self.device), None if frame_mask is None else frame_mask.to(self.device)
            emb = self.model.encode_video_from_features(feats, frame_mask).float()
        t0 = timer.add("encode", t0)
        probs = None
        if self.view_model is not None:
            if self.shared:  # the view model never saw the motion image
                t = feats.shape[1] - self.motion_frames
                logits = self.view_model.classify_features(feats[:, :t], None if frame_mask is None else frame_mask[:, :t])
            else:
                with self._autocast():
                    logits = self.view_model(view_clips.to(self.device))
            probs = logits.float().softmax(-1)
            timer.add("view", t0)
        return emb.cpu(), None if probs is None else probs.cpu()

    @torch.no_grad()
    def study(self, key: str, video_keys: list[str], emb: Tensor, probs: Tensor | None,
              known: Sequence[str]) -> EncodedStudy:
        """Per-section study embedding of one study's videos; a known view wins over the classifier."""
        views, conf, source, rows = [], [], [], []
        for j, view in enumerate(known):
            if view in self.view_names:
                p = known_view_probs(view, self.view_names)
                views.append(view), conf.append(1.0), source.append("known")
            elif probs is not None:
                p = probs[j]
                views.append(self.view_names[int(p.argmax())]), conf.append(round(float(p.max()), 4))
                source.append("classifier")
            else:
                p = known_view_probs(None, self.view_names)
                views.append(""), conf.append(0.0), source.append("unknown")
            rows.append(p)
        study, weights = self.attention(emb[None].to(self.device), torch.stack(rows)[None].to(self.device))
        unit = F.normalize(emb, dim=-1) if self.raw_clips else emb
        return EncodedStudy(key, list(video_keys), views, conf, source, list(self.attention.section_names),
                            study[0].cpu(), weights[0].cpu(), F.normalize(unit.mean(0), dim=-1), videos=emb.cpu())


class LoopClips(Dataset):
    """One item per loop of ``studies`` (grouped by study, in the given order): ``{"study_key",
    "video_key", "view", "clip", "view_clip"?}``, or ``{"study_key", "video_key", "error", "detail"}``
    when the loop cannot be read (never raises, so one bad file never stops a worker). Clips follow
    ``model``'s recorded input contract with ``sampling`` (``Sampling.recorded``) over it; ``view_clips``
    (only for a ``view_model`` that cannot share the video backbone) follow the view model's."""

    def __init__(self, ingest_dir: str | Path, dicom_root: str | Path, studies: Sequence[str], model,
                 sampling: Sampling, view_model=None, max_videos: int | None = None, cached: Any = ()):
        from medvid.datasets.echo import EchoVideoDataset

        self.clips = EchoVideoDataset.for_model(ingest_dir, dicom_root, model, sampling, start="begin")
        self.view_clips = (EchoVideoDataset.for_model(ingest_dir, dicom_root, view_model, Sampling.recorded(
            view_model.pretrained_cfg, mask=sampling.mask), start="begin") if view_model is not None else None)
        videos = self.clips.videos
        by_study = videos.groupby("study_key", sort=False).indices
        self.rows: list[int] = []
        self.counts: dict[str, int] = {}
        for key in studies:
            rows = list(by_study.get(key, []))[:max_videos] if max_videos else list(by_study.get(key, []))
            self.rows += rows
            self.counts[key] = len(rows)
        self.cached = cached  # video keys whose backbone features are cached: not decoded (view clip only)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from medvid.io.dicom import DicomFileError

        row = self.clips.videos.iloc[self.rows[i]]
        item: dict[str, Any] = {"study_key": row["study_key"], "video_key": row["video_key"], "view": row["view"]}
        try:
            if row["video_key"] not in self.cached:
                item["clip"] = self.clips.clip(row)
            if self.view_clips is not None:
                item["view_clip"] = self.view_clips.clip(row)
        except DicomFileError as exc:
            item.update(error=exc.reason, detail=exc.detail)
        except Exception as exc:  # noqa: BLE001 - reported per study, the batch goes on
            item.update(error="decode_error", detail=type(exc).__name__)
        return item


def open_feature_cache(directory: str | Path, encoder: StudyEncoder, n_frames: int, frame_stride: int | None,
                       target_fps: float | None, mask: str, motion: str = "none"):
    """A frozen-backbone frame-feature cache (e.g. ``medvid pretrain``'s ``OUT/cache/echo``) to reuse instead of
    decoding; refused unless it was built with this backbone and the same sampling and preprocessing."""
    from medvid.training.feature_cache import FeatureCache

    try:
        cache = FeatureCache(directory)
    except FileNotFoundError as exc:
        raise MedvidError(str(exc)) from exc
    fp = cache.meta.get("fingerprint", {})
    want = {"backbone": encoder.backbone_digest, "n_frames": n_frames + motion_frames(motion), "frame_stride": frame_stride,
            "target_fps": target_fps, "mask": mask, "motion": motion}
    differ = sorted(k for k, v in want.items() if fp.get(k) != v)
    cached_pre, pre = fp.get("preprocess") or {}, _json_safe(encoder.model.pretrained_cfg.to_dict())
    differ += [f"preprocess.{k}" for k in _PREPROCESS_KEYS if cached_pre.get(k) != pre.get(k)]
    if differ:
        raise MedvidError(f"{directory}: feature cache built with other settings ({', '.join(differ)}); "
                          "drop encoding.feature_cache or match them")
    return cache


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _list(items: list) -> list:
    return items


@dataclass
class _Pending:
    video_keys: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    emb: list[Tensor] = field(default_factory=list)
    probs: list[Tensor] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    seen: int = 0


def encode_studies(encoder: StudyEncoder, loops: LoopClips, *, loop_batch: int = 16, num_workers: int = 0,
                   timer: StageTimer | None = None, feature_cache: Any = None,
                   partial: bool = False) -> Iterator[EncodedStudy | dict[str, Any]]:
    """Yield each study of ``loops`` once all its loops are encoded: an :class:`EncodedStudy`, or
    ``{"study_key", "errors": [{"study_key", "video_key"?, "reason", "detail"}, ...]}`` when a loop failed
    or the study has none. ``partial``: a study with some unreadable loops is encoded from the others (its
    ``left_out`` names them); only a study with no readable loop is an error. Loops in ``feature_cache`` (a
    matching :class:`FeatureCache`, see :func:`open_feature_cache`) are not decoded: their cached backbone
    features are used."""
    timer = timer or StageTimer()
    for key, n in loops.counts.items():
        if n == 0:
            yield {"study_key": key, "errors": [{"study_key": key, "reason": "no_videos",
                                                 "detail": "no readable cine loop in the ingest"}]}
    pending: dict[str, _Pending] = defaultdict(_Pending)
    loader = DataLoader(loops, batch_size=loop_batch, num_workers=num_workers, collate_fn=_list,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    t0 = time.perf_counter()
    for items in loader:
        timer.add("decode", t0)
        good = [it for it in items if "error" not in it]
        decoded, cached = [it for it in good if "clip" in it], [it for it in good if "clip" not in it]
        good = decoded + cached
        slot = {id(it): j for j, it in enumerate(good)}
        parts = []
        for group in (decoded, cached):
            if not group:
                continue
            view_clips = torch.stack([it["view_clip"] for it in group]) if "view_clip" in group[0] else None
            if group is decoded:
                parts.append(encoder.encode_loops(torch.stack([it["clip"] for it in group]), view_clips, timer))
            else:
                feats = [feature_cache[it["video_key"]] for it in group]
                parts.append(encoder.encode_loops(None, view_clips, timer, torch.stack([f for f, _ in feats]),
                                                  torch.stack([m for _, m in feats])))
        if parts:
            emb = torch.cat([p[0] for p in parts])
            probs = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        for it in items:
            p = pending[it["study_key"]]
            p.seen += 1
            if "error" in it:
                p.errors.append({"study_key": it["study_key"], "video_key": it["video_key"], "reason": it["error"],
                                 "detail": it["detail"]})
            else:
                j = slot[id(it)]
                p.video_keys.append(it["video_key"]), p.views.append(it["view"]), p.emb.append(emb[j])
                if probs is not None:
                    p.probs.append(probs[j])
            if p.seen == loops.counts[it["study_key"]]:
                del pending[it["study_key"]]
                if p.errors and not (partial and p.video_keys):
                    yield {"study_key": it["study_key"], "errors": p.errors}
                    continue
                t1 = time.perf_counter()
                study = encoder.study(it["study_key"], p.video_keys, torch.stack(p.emb),
                                      torch.stack(p.probs) if p.probs else None, p.views)
                study.left_out = [{k: e[k] for k in ("video_key", "reason", "detail")} for e in p.errors]
                timer.add("encode", t1)
                yield study
        t0 = time.perf_counter()


def load_encoder(model_dir: str | Path, views_dir: str | Path, device: torch.device,
                 precision: str = "auto", raw_clips: bool = False) -> StudyEncoder:
    """``StudyEncoder`` from saved folders: a video model of any kind with a clip embedding (``medvid pretrain``'s,
    an imported EchoPrime) + its section x view attention (the shipped prior when the folder has none, as
    EchoPrime's static table) + an optional view classifier (``views_dir`` blank: none)."""
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.models.checkpoint import load_pretrained

    model = load_pretrained(model_dir)
    try:
        embedding_path(model)
    except MedvidError as exc:
        raise MedvidError(f"{model_dir}: {exc}") from exc
    view_model = load_pretrained(views_dir) if views_dir else None
    if view_model is not None and not hasattr(view_model, "labels"):
        raise MedvidError(f"{views_dir}: a '{type(view_model).checkpoint_kind}' model is not a view classifier "
                          "(train one with medvid train-views, or import echoprime-view)")
    return StudyEncoder(model, ViewInformedAttention.from_pretrained(model_dir), view_model, device, precision,
                        raw_clips)


def loop_clips(encoder: StudyEncoder, ingest_dir: str | Path, dicom_root: str | Path, studies: list[str],
               enc: Encoding) -> tuple[LoopClips, Any]:
    """``(LoopClips, feature cache or None)`` of ``studies`` for ``encoder`` (a second clip per loop only when
    the view classifier cannot share the video backbone; loops in the feature cache are not decoded)."""

    s = Sampling.recorded(encoder.model.pretrained_cfg, enc.n_frames, enc.target_fps, enc.frame_stride, enc.mask,
                          enc.short_clip)
    cache = None
    if enc.feature_cache:
        if encoder.path != "frames":
            raise MedvidError("encoding.feature_cache holds frame features; this model embeds whole clips: drop it")
        cache = open_feature_cache(enc.feature_cache, encoder, s.num_frames, s.frame_stride, s.fps, s.mask,
                                   s.motion)
    loops = LoopClips(ingest_dir, dicom_root, studies, encoder.model, s,
                      encoder.view_model if encoder.needs_view_clips else None, enc.max_videos,
                      cached=cache.index if cache else ())
    return loops, cache
