"""Build models by registry name or config: ``create_model("medvid-effnetlite0-minilm")``.

The registry is ``configs/models/<name>.yaml`` (validated against ``VideoTextConfig``). The
returned model carries ``pretrained_cfg``: input size, number of frames and the per-channel
mean/std (0-255 scale) its backbone weights expect, like timm's ``pretrained_cfg``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from medvid.config import config_dir, setting
from medvid.errors import MedvidError
from medvid.models.backbones import backbone_norm_255, create_backbone
from medvid.models.checkpoint import register_kind
from medvid.models.clip import TEXT_DIR, VideoTextModel
from medvid.models.text import TextEncoder, load_text_model, load_tokenizer
from medvid.models.video import VideoEncoder, create_temporal
from medvid.models.view import ViewClassifier
from medvid.transforms.contract import PretrainedCfg

DEFAULT_MODEL = "medvid-effnetlite0-minilm"


@dataclass
class InputConfig:
    """The input contract recorded in ``pretrained_cfg`` (mean/std null = what the backbone weights expect)."""

    input_size: int = setting(224, "frame side in pixels after crop and resize")
    num_frames: int = setting(16, "frames per clip")
    crop: str = setting("center_square", "ClipPreprocess crop: center_square | none")
    zoom: float = setting(0.0, "fraction of the cropped side removed from each edge")
    mean: Optional[list[float]] = setting(None, "per-channel mean on 0-255; null = the backbone weights'")
    std: Optional[list[float]] = setting(None, "per-channel std on 0-255; null = the backbone weights'")


@dataclass
class VideoTextConfig(InputConfig):
    """Everything that defines a ``VideoTextModel``; ``configs/models/*.yaml`` fill it in."""

    name: str = setting(DEFAULT_MODEL, "registry name")
    pretrained: bool = setting(True, "load base weights (backbone + text); false = random init")
    # video
    backbone: str = setting("tf_efficientnet_lite0", "any timm architecture")
    backbone_checkpoint: Optional[str] = setting(None, "local weights for a backbone other than the packaged one")
    temporal: str = setting("transformer", "mean | attention | transformer | xclip")
    temporal_width: int = setting(512, "width of the temporal module")
    temporal_layers: int = setting(2, "layers of the temporal transformer")
    temporal_heads: int = setting(8, "attention heads of the temporal module")
    temporal_dropout: float = setting(0.0, "dropout inside the temporal module")
    max_frames: int = setting(64, "longest clip the temporal module takes (position table size)")
    frame_chunk: int = setting(64, "frames per backbone call (memory bound)")
    # text
    text_model_path: Optional[str] = setting(None, "local HF folder; None = packaged all-MiniLM-L6-v2")
    text_pooling: str = setting("mean", "cls | mean | last_n_mean")
    text_last_n: int = setting(4, "layers averaged by last_n_mean pooling")
    max_text_length: int = setting(128, "tokens per text (longer texts are truncated)")
    # joint space
    embed_dim: int = setting(512, "width of the joint video-text space")
    logit_scale_init: float = setting(14.285714285714286, "1 / 0.07 (CLIP)")


@dataclass
class ViewClassifierConfig(InputConfig):
    """A ``ViewClassifier``; ``labels`` empty = ECHO_VIEWS, or name a set: ``echo_views`` / ``lecture_frame_types``."""

    name: str = setting("view-effnetlite0-echo", "registry name")
    pretrained: bool = setting(True, "load the backbone's base weights; false = random init")
    backbone: str = setting("tf_efficientnet_lite0", "any timm architecture")
    backbone_checkpoint: Optional[str] = setting(None, "local weights for a backbone other than the packaged one")
    label_set: str = setting("echo_views", "echo_views | lecture_frame_types (when labels is empty)")
    labels: list[str] = setting(help="class names; empty = the label set", factory=list)
    clip_level: bool = setting(False, "pool frame features over time before the head (else average frame logits)")
    temporal: str = setting("mean", "temporal module of a clip-level classifier")
    dropout: float = setting(0.2, "dropout before the head")


def list_models() -> list[str]:
    """Names in the registry (``configs/models/*.yaml``)."""
    return sorted(p.stem for p in (config_dir() / "models").glob("*.yaml"))


def _resolve(cfg: dict | DictConfig | str | None, schema: type) -> DictConfig:
    base = OmegaConf.structured(schema)
    if cfg is None:
        return base
    if isinstance(cfg, (str, Path)):
        path = Path(cfg)
        if path.suffix not in (".yaml", ".yml"):
            path = config_dir() / "models" / f"{cfg}.yaml"
            if not path.is_file():
                raise MedvidError(f"unknown model '{cfg}'; registered: {', '.join(list_models())}")
        elif not path.is_file():
            raise MedvidError(f"model config not found: {path}")
        cfg = OmegaConf.load(path)
    try:
        return OmegaConf.merge(base, cfg)
    except Exception as e:  # omegaconf validation errors: unknown key, wrong type
        raise MedvidError(f"invalid model config: {e}") from e


def _pretrained_cfg(c: DictConfig, backbone) -> PretrainedCfg:
    mean, std = backbone_norm_255(backbone, c.backbone)
    return PretrainedCfg(input_size=int(c.input_size), num_frames=int(c.num_frames), crop=str(c.crop),
                         zoom=float(c.zoom), mean=c.mean or mean, std=c.std or std, scale="0-255",
                         layout="B,3,T,H,W RGB float32")


def model_config(cfg: dict | DictConfig | str | None = None, pretrained: bool | None = None) -> DictConfig:
    """The validated ``VideoTextConfig`` for a registry name, YAML path, dict or DictConfig."""
    c = _resolve(DEFAULT_MODEL if cfg is None else cfg, VideoTextConfig)
    if pretrained is not None:
        c.pretrained = pretrained
    return c


def create_video_encoder(cfg: dict | DictConfig | str | None = DEFAULT_MODEL,
                         pretrained: bool | None = None) -> VideoEncoder:
    """Only the video tower (backbone + temporal module) of a model config."""
    c = model_config(cfg, pretrained)
    backbone = create_backbone(c.backbone, c.pretrained, c.backbone_checkpoint)
    temporal = create_temporal(c.temporal, backbone.num_features, c.temporal_width, c.temporal_layers,
                               c.temporal_heads, c.max_frames, c.temporal_dropout)
    return VideoEncoder(backbone, temporal, c.frame_chunk)


def create_model(cfg: dict | DictConfig | str | None = DEFAULT_MODEL, pretrained: bool | None = None) -> VideoTextModel:
    """Build a ``VideoTextModel``; ``pretrained`` overrides ``cfg.pretrained``.

    Base weights come from local files only; missing ones raise ``MissingWeightsError``.
    """
    c = model_config(cfg, pretrained)
    video = create_video_encoder(c)
    text = TextEncoder(load_text_model(c.text_model_path, c.pretrained), load_tokenizer(c.text_model_path),
                       c.text_pooling, c.text_last_n, c.max_text_length)
    return VideoTextModel(video, text, c.embed_dim, c.logit_scale_init,
                          config=OmegaConf.to_container(c), pretrained_cfg=_pretrained_cfg(c, video.backbone))


def create_tokenizer(cfg: dict | DictConfig | str | None = DEFAULT_MODEL):
    """The Hugging Face tokenizer of a model config (``tok(texts, padding=True, return_tensors="pt")``)."""
    return load_tokenizer(model_config(cfg).text_model_path)


def view_classifier_config(cfg: dict | DictConfig | str | None = "view-effnetlite0-echo",
                           pretrained: bool | None = None) -> DictConfig:
    """The validated ``ViewClassifierConfig`` for a registry name, YAML path, dict or DictConfig."""
    c = _resolve(cfg, ViewClassifierConfig)
    if pretrained is not None:
        c.pretrained = pretrained
    return c


def create_view_classifier(cfg: dict | DictConfig | str | None = "view-effnetlite0-echo",
                           pretrained: bool | None = None) -> ViewClassifier:
    """Build a ``ViewClassifier`` from a registry name (``configs/models/view-*.yaml``), path or dict."""
    c = view_classifier_config(cfg, pretrained)
    backbone = create_backbone(c.backbone, c.pretrained, c.backbone_checkpoint)
    model = ViewClassifier(backbone, labels=list(c.labels) or c.label_set, clip_level=c.clip_level,
                           temporal=c.temporal, dropout=c.dropout)
    model.config = OmegaConf.to_container(c)
    model.pretrained_cfg = _pretrained_cfg(c, backbone)
    return model


def _load_video_text(config: dict[str, Any], folder: Path) -> VideoTextModel:
    return create_model({**config, "text_model_path": str(folder / TEXT_DIR)}, pretrained=False)


def _load_view_classifier(config: dict[str, Any], folder: Path) -> ViewClassifier:
    return create_view_classifier(config, pretrained=False)


register_kind("video_text", VideoTextModel, _load_video_text)
register_kind("view_classifier", ViewClassifier, _load_view_classifier)
