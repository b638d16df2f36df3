"""Training objectives as modules: ``forward(batch) -> (loss, logs)`` for :class:`~medvid.training.trainer.Trainer`.

Both objectives accept either cached frame features (``feats [.., T, F]`` + ``frame_mask``,
frozen backbone) or raw clips (``clips [.., 3, T, H, W]``, full fine-tuning), and either cached
text-tower features (``*_feats``, locked text tower) or tokens (``*_ids`` + ``*_attn``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvid.training.losses import aligned_mil_nce, mil_nce, section_info_nce
from medvid.models.aggregate import ViewInformedAttention
from medvid.models.clip import VideoTextModel

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on 1/temperature


class _Contrastive(nn.Module):
    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.model = model

    def scale(self) -> Tensor:
        return self.model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def videos(self, batch: dict, prefix: str = "") -> Tensor:
        """Unit video embeddings ``[N, D]`` from ``feats``/``frame_mask`` or ``clips``/``frame_mask``."""
        if "clips" in batch:
            return self.model.encode_video(batch["clips"], batch.get("frame_mask"))
        return self.model.encode_video_from_features(batch["feats"], batch["frame_mask"])

    def texts(self, batch: dict, name: str) -> Tensor:
        """Unit text embeddings with the leading shape of ``batch[name + "_feats"]`` or ``batch[name + "_ids"]``."""
        if f"{name}_feats" in batch:
            x = batch[f"{name}_feats"]
            return F.normalize(self.model.text_proj(x.to(self.model.text_proj.weight.dtype)), dim=-1)
        ids, attn = batch[f"{name}_ids"], batch[f"{name}_attn"]
        emb = self.model.encode_text(ids.reshape(-1, ids.shape[-1]), attn.reshape(-1, attn.shape[-1]))
        return emb.reshape(*ids.shape[:-1], -1)


ALIGNMENTS = ("mil", "ot")


class LectureContrastive(_Contrastive):
    """Clip–speech MIL-NCE: each clip's positives are its anchor sentence and the overlapping
    sentences of the other ASR sources (``text_*`` ``[B, P, ...]`` with ``text_mask [B, P]``).
    ``alignment="ot"``: :func:`~medvid.training.losses.aligned_mil_nce`, with a learnt "no match" score
    for speech that shows nothing on screen."""

    def __init__(self, model: VideoTextModel, alignment: str = "mil"):
        super().__init__(model)
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.alignment = alignment
        self.dustbin = nn.Parameter(torch.tensor(0.2)) if alignment == "ot" else None

    def embed(self, batch: dict) -> tuple[Tensor, Tensor]:
        return self.videos(batch), self.texts(batch, "text")

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        video, texts = self.embed(batch)
        if self.dustbin is None:
            loss = mil_nce(video, texts, batch["text_mask"], self.scale())
            return loss, {"temperature": float(1 / self.scale().detach())}
        loss = aligned_mil_nce(video, texts, batch["text_mask"], self.scale(), self.dustbin)
        return loss, {"temperature": float(1 / self.scale().detach()), "dustbin": float(self.dustbin.detach())}


class EchoContrastive(_Contrastive):
    """Study–report contrastive learning with view-informed attention, plus video–report pairs.

    Batch (``V`` videos per study, padded; ``S`` report sections): video inputs ``[B, V, ...]`` with
    ``video_mask [B, V]``, ``view_probs [B, V, K]``, section texts ``section_* [B, S, ...]`` with
    ``section_mask [B, S]``, and the whole report ``report_* [B, ...]``.

    loss = section_info_nce(study sections, report sections)
           + video_weight · mil_nce(report, the study's videos)   (every video of a study is a positive)
    """

    def __init__(self, model: VideoTextModel, attention: ViewInformedAttention, video_weight: float = 0.5):
        super().__init__(model)
        self.attention = attention
        self.video_weight = video_weight

    def video_embeddings(self, batch: dict) -> Tensor:
        """``[B, V, D]`` unit embeddings of the real videos (zeros where ``video_mask`` is False)."""
        vm = batch["video_mask"].bool()
        flat = {k: batch[k][vm] for k in ("feats", "clips", "frame_mask") if k in batch}
        emb = self.videos(flat)
        out = emb.new_zeros(*vm.shape, emb.shape[-1])
        out[vm] = emb
        return out

    def embed(self, batch: dict) -> dict[str, Tensor]:
        videos = self.video_embeddings(batch)
        study, weights = self.attention(videos, batch["view_probs"], batch["video_mask"])
        return {"videos": videos, "study": study, "weights": weights,
                "sections": self.texts(batch, "section"), "report": self.texts(batch, "report")}

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        e = self.embed(batch)
        scale = self.scale()
        study_loss = section_info_nce(e["study"], e["sections"], batch["section_mask"].bool(), scale)
        video_loss = mil_nce(e["report"], e["videos"], batch["video_mask"].bool(), scale)
        loss = study_loss + self.video_weight * video_loss
        return loss, {"study_loss": float(study_loss.detach()), "video_loss": float(video_loss.detach()),
                      "temperature": float(1 / scale.detach())}


def section_scores(study: Tensor, sections: Tensor, section_mask: Tensor) -> Tensor:
    """Study × report similarity ``[N, N]``: mean over report ``j``'s sections of ``study_i[s] · text_j[s]``
    (the score :func:`~medvid.training.losses.section_info_nce` trains)."""
    w = section_mask.float() / section_mask.float().sum(1, keepdim=True).clamp_min(1.0)
    return torch.einsum("isd,jsd,js->ij", study.float(), sections.float(), w)


class ViewClassification(nn.Module):
    """Cross-entropy of a ``ViewClassifier`` on cached frame features (``feats``) or clips (``clips``)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def logits(self, batch: dict) -> Tensor:
        if "clips" in batch:
            return self.classifier(batch["clips"], batch["frame_mask"])
        return self.classifier.classify_features(batch["feats"], batch["frame_mask"])

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        logits = self.logits(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        return loss, {"accuracy": float((logits.argmax(-1) == batch["label"]).float().mean())}
