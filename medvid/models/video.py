"""Video encoder: a per-frame backbone plus a temporal module that pools frames into one clip vector.

Temporal modules share one signature, ``forward(feats [B,T,F], mask [B,T] bool, True = real
frame) -> [B, out_dim]``; padded frames (mask False) never influence the output. Frame features
can be computed once (``encode_frames``) and cached, so the temporal part trains on a CPU with a
frozen backbone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from medvid.models.backbones import FrozenBackboneMixin


def resolve_mask(mask: Tensor | None, like: Tensor, what: str = "frame") -> Tensor:
    """Bool mask ``[B,T]`` (True = real) for ``like [B,T,...]`` on its device; None = all real.

    Each row needs at least one real entry (a clip without frames has no embedding).
    """
    b, t = like.shape[:2]
    if mask is None:
        return torch.ones(b, t, dtype=torch.bool, device=like.device)
    mask = mask.to(device=like.device, dtype=torch.bool)
    if mask.shape != (b, t):
        raise ValueError(f"{what} mask must be [{b},{t}], got {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"every row needs at least one valid {what} (its mask row is all False)")
    return mask


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of ``x [B,T,F]`` counting only ``mask [B,T]`` positions (others may hold anything, even NaN)."""
    keep = mask.unsqueeze(-1)
    return x.masked_fill(~keep, 0).sum(1) / keep.sum(1).clamp_min(1).to(x.dtype)


class MeanPool(nn.Module):
    """Average of the valid frames' features (the SurgVLP reference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(feats, mask)


class AttentionPool(nn.Module):
    """A learned query attends over the frames (multi-head); padded frames are masked out."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_dim = dim

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        kv = self.norm(feats)
        q = self.query.expand(feats.shape[0], -1, -1)
        out, _ = self.attn(q, kv, kv, key_padding_mask=~mask, need_weights=False)
        return out[:, 0] + masked_mean(feats, mask)


def time_positions(max_frames: int, width: int) -> nn.Parameter:
    """Learned per-frame position embeddings ``[1, max_frames, width]`` (truncated normal, std 0.02)."""
    pos = nn.Parameter(torch.zeros(1, max_frames, width))
    nn.init.trunc_normal_(pos, std=0.02)
    return pos


class TemporalTransformer(nn.Module):
    """Frame features -> width, + learned time positions, a small Transformer encoder, masked mean."""

    def __init__(self, dim: int, width: int = 512, layers: int = 2, heads: int = 8, max_frames: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.pos = time_positions(max_frames, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.max_frames = max_frames
        self.out_dim = width

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        t = feats.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the temporal transformer's max_frames={self.max_frames}")
        x = self.proj(feats) + self.pos[:, :t]
        x = self.encoder(x, src_key_padding_mask=~mask)
        return masked_mean(self.norm(x), mask)


class CrossFrameAttention(nn.Module):
    """X-CLIP-style cross-frame communication on pooled frame features.

    Each frame emits a message token; message tokens exchange information across time in a
    Transformer layer; every frame then reads the messages (cross-attention) and the updated
    frames are mean-pooled. X-CLIP inserts messages inside each ViT block; CNN backbones have no
    tokens, so here the exchange happens once, after the backbone.
    """

    def __init__(self, dim: int, width: int = 512, heads: int = 8, max_frames: int = 64, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.message = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
        self.pos = time_positions(max_frames, width)
        self.exchange = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True,
                                                   norm_first=True, activation="gelu")
        self.read_norm = nn.LayerNorm(width)
        self.read = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.max_frames = max_frames
        self.out_dim = width

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        t = feats.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed max_frames={self.max_frames}")
        x = self.proj(feats)
        msg = self.exchange(self.message(x) + self.pos[:, :t], src_key_padding_mask=~mask)
        q = self.read_norm(x)
        read, _ = self.read(q, msg, msg, key_padding_mask=~mask, need_weights=False)
        return masked_mean(self.norm(x + read), mask)


TEMPORAL_MODULES = ("mean", "attention", "transformer", "xclip")


def create_temporal(kind: str, dim: int, width: int = 512, layers: int = 2, heads: int = 8,
                    max_frames: int = 64, dropout: float = 0.0) -> nn.Module:
    """Build a temporal module by name: one of ``TEMPORAL_MODULES``."""
    if kind == "mean":
        return MeanPool(dim)
    if kind == "attention":
        return AttentionPool(dim, heads)
    if kind == "transformer":
        return TemporalTransformer(dim, width, layers, heads, max_frames, dropout)
    if kind == "xclip":
        return CrossFrameAttention(dim, width, heads, max_frames, dropout)
    raise ValueError(f"unknown temporal module '{kind}', expected one of {TEMPORAL_MODULES}")


class VideoEncoder(FrozenBackboneMixin, nn.Module):
    """Frame backbone (``[N,3,H,W] -> [N,F]``) + temporal module (``[B,T,F] -> [B,out_dim]``).

    Only valid frames go through the backbone, so padded frames cost nothing and cannot leak
    into BatchNorm statistics or the output.
    """

    def __init__(self, backbone: nn.Module, temporal: nn.Module, frame_chunk: int = 64):
        super().__init__()
        self.backbone = backbone
        self.temporal = temporal
        self.frame_chunk = frame_chunk
        self.feature_dim: int = backbone.num_features
        self.out_dim: int = temporal.out_dim

    def encode_frames(self, frames: Tensor) -> Tensor:
        """Backbone features of single frames ``[N,3,H,W] -> [N,F]`` (in chunks of ``frame_chunk``)."""
        if frames.ndim != 4:
            raise ValueError(f"frames must be [N,3,H,W], got {tuple(frames.shape)}")
        return torch.cat([self.backbone(c) for c in frames.split(self.frame_chunk)]) if len(frames) else \
            frames.new_zeros(0, self.feature_dim)

    def forward_features(self, feats: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Temporal module on cached frame features ``[B,T,F] -> [B,out_dim]``."""
        mask = resolve_mask(frame_mask, feats)
        return self.temporal(feats.masked_fill(~mask.unsqueeze(-1), 0), mask)  # padding may hold anything

    def frame_features(self, clips: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``[B,3,T,H,W]`` clips -> (features ``[B,T,F]`` with zeros at padded frames, mask ``[B,T]``)."""
        if clips.ndim != 5:
            raise ValueError(f"clips must be [B,3,T,H,W], got {tuple(clips.shape)}")
        b, _, t = clips.shape[:3]
        frames = clips.permute(0, 2, 1, 3, 4)  # [B,T,3,H,W]
        mask = resolve_mask(frame_mask, frames)
        frames = frames[mask]  # [N_valid,3,H,W]
        valid = self.encode_frames(frames)
        feats = valid.new_zeros(b, t, valid.shape[-1])
        feats[mask] = valid
        return feats, mask

    def forward(self, clips: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        feats, mask = self.frame_features(clips, frame_mask)
        return self.temporal(feats, mask)
