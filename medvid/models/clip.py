"""The joint video-text model: video encoder, text encoder, projections, learnable temperature."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvid.models.checkpoint import Pretrained
from medvid.models.backbones import preprocess_for
from medvid.models.text import TextEncoder
from medvid.transforms.clip import ClipPreprocess
from medvid.transforms.contract import PretrainedCfg
from medvid.models.video import VideoEncoder

TEXT_DIR = "text"  # in a saved folder: the Hugging Face config and tokenizer of the text tower


def _maybe_norm(x: Tensor, normalize: bool) -> Tensor:
    return F.normalize(x, dim=-1) if normalize else x


class VideoTextModel(Pretrained, nn.Module):
    """CLIP-style model over clips ``[B,3,T,H,W]`` and tokenised text, embedding both in ``embed_dim``.

    ``logit_scale`` is the log of 1/temperature (CLIP convention); losses compute
    ``logit_scale.exp() * v @ t.T`` and may clamp it. ``config`` is the resolved model config
    (what ``save_pretrained`` writes) and ``pretrained_cfg`` the input contract (``PretrainedCfg``): frame
    size, number of frames and per-channel mean/std on the 0-255 scale (as produced by
    ``medvid.transforms.clip.to_clip_tensor``).
    """

    def __init__(self, video: VideoEncoder, text: TextEncoder, embed_dim: int = 512,
                 logit_scale_init: float = 1 / 0.07, config: dict[str, Any] | None = None,
                 pretrained_cfg: PretrainedCfg | None = None):
        super().__init__()
        self.video = video
        self.text = text
        self.video_proj = nn.Linear(video.out_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text.out_dim, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.embed_dim = embed_dim
        self.config: dict[str, Any] = dict(config or {})
        self.pretrained_cfg = pretrained_cfg or PretrainedCfg()

    def checkpoint_config(self) -> dict[str, Any]:
        """The model config as saved: weights come from the folder, so no base-weight paths are kept."""
        return {**self.config, "pretrained": False, "backbone_checkpoint": None, "text_model_path": TEXT_DIR}

    def save_checkpoint_files(self, folder: Path) -> None:
        """``text/``: the tokenizer and Hugging Face config, so loading needs nothing outside the folder."""
        self.text.tokenizer.save_pretrained(str(folder / TEXT_DIR))
        self.text.model.config.save_pretrained(str(folder / TEXT_DIR))

    def preprocess(self) -> ClipPreprocess:
        """The ``ClipPreprocess`` (crop, resize, normalise) matching ``pretrained_cfg``."""
        return preprocess_for(self.pretrained_cfg)

    # --- video -----------------------------------------------------------------------------
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Backbone features ``[N,3,H,W] -> [N,F]``, for frozen-backbone feature caching."""
        return self.video.encode_frames(frames)

    def encode_video_from_features(self, feats: Tensor, frame_mask: Tensor | None = None,
                                   normalize: bool = True) -> Tensor:
        """Temporal module + projection on cached frame features ``[B,T,F] -> [B,D]``."""
        return _maybe_norm(self.video_proj(self.video.forward_features(feats, frame_mask)), normalize)

    def encode_video(self, clips: Tensor, frame_mask: Tensor | None = None, normalize: bool = True) -> Tensor:
        """Clips ``[B,3,T,H,W]`` (``frame_mask [B,T]`` True = real frame) -> ``[B,D]``."""
        return _maybe_norm(self.video_proj(self.video(clips, frame_mask)), normalize)

    # --- text ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, Tensor]:
        """Tokenise to ``{"input_ids", "attention_mask"}`` (padded, truncated to ``max_length``)."""
        return self.text.tokenize(texts, max_length)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = True) -> Tensor:
        return _maybe_norm(self.text_proj(self.text(input_ids, attention_mask)), normalize)

    @torch.no_grad()
    def encode_long_text(self, texts: Sequence[str], stride: int = 32, normalize: bool = True) -> Tensor:
        """Embed texts of any length: overlapping token windows, projected and averaged per text."""
        batch, owner = self.text.tokenize_windows(texts, stride)
        device = self.logit_scale.device
        emb = self.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device), normalize=False)
        owner = owner.to(device)
        out = emb.new_zeros(len(texts), emb.shape[-1]).index_add_(0, owner, emb)
        out = out / torch.bincount(owner, minlength=len(texts)).clamp_min(1).unsqueeze(-1).to(emb.dtype)
        return _maybe_norm(out, normalize)

    # --- training helpers ------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Freeze the frame backbone (features can then be cached with ``encode_frames``)."""
        self.video.freeze_backbone()

    def freeze_text(self) -> None:
        """Freeze the transformer of the text encoder (its projection stays trainable)."""
        for p in self.text.model.parameters():
            p.requires_grad_(False)
