"""Retrieval evaluation during training: video→text and text→video recall@1/5/10."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from medvid.metrics import recall_at_k


def retrieval_metrics(video: torch.Tensor | None, text: torch.Tensor | None, ks: Sequence[int] = (1, 5, 10),
                      sim: torch.Tensor | None = None, chunk: int = 2048) -> dict[str, float]:
    """Recall@k both ways for paired embeddings (row ``i`` of ``video`` matches row ``i`` of ``text``).

    ``sim [N, N]`` (video × text) may be given instead of cosine similarity, e.g. for study-level
    scores averaged over report sections. Keys: ``video_to_text_recall@k``, ``text_to_video_recall@k``
    and the matching ``*_median_rank`` (as :func:`medvid.metrics.recall_at_k`). From embeddings, the
    similarity is formed ``chunk`` rows at a time, so memory stays ``O(chunk × N)``, not ``O(N²)``.
    """
    if sim is not None:
        sim = sim.detach().float().cpu()
        target = torch.arange(sim.shape[0])
        return {f"{name}_{k}": v for name, s in (("video_to_text", sim), ("text_to_video", sim.T))
                for k, v in recall_at_k(s, target, ks).items()}
    v = F.normalize(video.detach().float(), dim=-1)
    t = F.normalize(text.detach().float(), dim=-1)
    out: dict[str, float] = {}
    for name, queries, candidates in (("video_to_text", v, t), ("text_to_video", t, v)):
        ranks = torch.cat([_ranks(queries[a:a + chunk] @ candidates.T, a) for a in range(0, len(queries), chunk)])
        out.update({f"{name}_recall@{k}": float((ranks <= k).float().mean()) for k in ks})
        out[f"{name}_median_rank"] = float(ranks.float().median())
    return out


def _ranks(sim: torch.Tensor, first: int) -> torch.Tensor:
    """1 + candidates scoring strictly above the positive, for query rows ``first ...`` whose positive is
    candidate ``first + row`` (ties in the query's favour, as ``recall_at_k``)."""
    rows = torch.arange(len(sim), device=sim.device)
    positive = sim[rows, first + rows].unsqueeze(1)
    return ((sim > positive).sum(1) + 1).cpu()

