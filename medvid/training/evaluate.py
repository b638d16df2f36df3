"""Retrieval evaluation during training: video→text and text→video recall@1/5/10."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from medvid.metrics import recall_at_k


def retrieval_metrics(video: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                      sim: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@k both ways for paired embeddings (row ``i`` of ``video`` matches row ``i`` of ``text``).

    ``sim [N, N]`` (video × text) may be given instead of cosine similarity, e.g. for study-level
    scores averaged over report sections. Keys: ``video_to_text_recall@k``, ``text_to_video_recall@k``
    and the matching ``*_median_rank``.
    """
    if sim is None:
        sim = F.normalize(video.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    sim = sim.detach().float().cpu()
    target = torch.arange(sim.shape[0])
    out: dict[str, float] = {}
    for name, s in (("video_to_text", sim), ("text_to_video", sim.T)):
        for k, v in recall_at_k(s, target, ks).items():
            out[f"{name}_{k}"] = v
    return out


def chance_recall(n_candidates: int, k: int) -> float:
    """Recall@k of random ranking with one positive among ``n_candidates``."""
    return min(1.0, k / n_candidates)
