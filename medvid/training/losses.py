"""Contrastive losses for video–text pretraining, correct under data parallelism.

Every loss takes this rank's L2-normalised embeddings, gathers the other side from all ranks
(:func:`medvid.training.distributed.gather_with_grad`, gradients flow to each local shard) and
scores the local rows against the global batch. Each rank's loss is the mean over its own rows,
so the mean over ranks equals the single-process loss on the global batch, and DDP's gradient
averaging yields exactly the single-process gradient.

``scale`` is the multiplier applied to cosine similarities (CLIP's ``logit_scale.exp()``); pass it
as a tensor so a learnable temperature receives gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from medvid.training.distributed import all_reduce_mean, gather_with_grad, shard_offset


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): pair ``i`` of ``a [B, D]`` and ``b [B, D]`` is the positive.

    Returns ``(CE(a→b) + CE(b→a)) / 2`` averaged over this rank's rows.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be [B, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    all_a, all_b = gather_with_grad(a), gather_with_grad(b)
    target = torch.arange(a.shape[0], device=a.device) + shard_offset(a.shape[0])
    logits_ab = scale * a @ all_b.T
    logits_ba = scale * b @ all_a.T
    return (F.cross_entropy(logits_ab.float(), target) + F.cross_entropy(logits_ba.float(), target)) / 2


def section_info_nce(study: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                     scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE between studies and reports described section by section.

    ``study [B, S, D]`` holds one embedding per report section (view-informed attention),
    ``text [B, S, D]`` the section texts' embeddings and ``text_mask [B, S]`` which sections the
    report has. Study ``i`` and report ``j`` score the mean over ``j``'s sections of
    ``study_i[s] · text_j[s]``; with ``S = 1`` this is :func:`info_nce`.
    """
    if study.shape != text.shape or study.ndim != 3 or text_mask.shape != study.shape[:2]:
        raise ValueError(f"shapes disagree: study {tuple(study.shape)}, text {tuple(text.shape)}, "
                         f"mask {tuple(text_mask.shape)}")
    count = text_mask.sum(1)
    if bool((count == 0).any()):
        raise ValueError("every report needs at least one section")
    weight = text_mask.to(text.dtype) / count[:, None].to(text.dtype)  # [B, S]
    all_study, all_text = gather_with_grad(study), gather_with_grad(text)
    all_weight = gather_with_grad(weight)
    target = torch.arange(study.shape[0], device=study.device) + shard_offset(study.shape[0])
    logits_st = scale * torch.einsum("isd,jsd,js->ij", study, all_text, all_weight)
    logits_ts = scale * torch.einsum("jsd,isd,js->ji", text, all_study, weight)
    return (F.cross_entropy(logits_st.float(), target) + F.cross_entropy(logits_ts.float(), target)) / 2


def _global_batch(video: torch.Tensor, texts: torch.Tensor,
                  text_mask: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the MIL-NCE shapes (``video [B, D]``, ``texts [B, P, D]``, ``text_mask [B, P]`` with slot 0 valid) and
    gather them over ranks: this rank's row offset, all clips, all texts ``[n, P, D]`` and their mask."""
    B, P, D = texts.shape
    if video.shape != (B, D) or text_mask.shape != (B, P):
        raise ValueError(f"shapes disagree: video {tuple(video.shape)}, texts {tuple(texts.shape)}, "
                         f"mask {tuple(text_mask.shape)}")
    if not bool(text_mask[:, 0].all()):
        raise ValueError("text slot 0 (the anchor) must be valid for every clip")
    all_texts = gather_with_grad(texts.reshape(B, P * D)).reshape(-1, P, D)
    return shard_offset(B), gather_with_grad(video), all_texts, gather_with_grad(text_mask.float()).bool()


def mil_nce(video: torch.Tensor, texts: torch.Tensor, text_mask: torch.Tensor,
            scale: torch.Tensor | float) -> torch.Tensor:
    """MIL-NCE (Miech et al. 2020) with several positive texts per clip, symmetrised.

    ``video [B, D]``; ``texts [B, P, D]`` with ``text_mask [B, P]`` (True = a real text; slot 0
    must be real). Clip→text: ``-log(Σ_pos exp(s) / Σ_all exp(s))`` over every valid text in the
    global batch; text→clip: InfoNCE of each valid text against all clips (its own is positive).
    The result is the mean of the two directions.
    """
    B, P, D = texts.shape
    offset, all_video, all_texts, all_mask = _global_batch(video, texts, text_mask)
    n = all_texts.shape[0]

    logits = (scale * video @ all_texts.reshape(n * P, D).T).float()  # [B, n*P]
    logits = logits.masked_fill(~all_mask.reshape(1, n * P), float("-inf"))
    owner = torch.arange(n, device=video.device).repeat_interleave(P)  # clip owning each text
    positive = owner[None, :] == (torch.arange(B, device=video.device) + offset)[:, None]
    pos_logits = logits.masked_fill(~positive, float("-inf"))
    clip_to_text = (torch.logsumexp(logits, dim=1) - torch.logsumexp(pos_logits, dim=1)).mean()

    local_texts = texts[text_mask]  # [M, D], this rank's valid texts
    local_owner = torch.arange(B, device=video.device).repeat_interleave(text_mask.sum(1)) + offset
    ce = F.cross_entropy((scale * local_texts @ all_video.T).float(), local_owner, reduction="sum")
    # Divide by the mean count over ranks so the rank-average is the mean over all texts.
    text_to_clip = ce / all_reduce_mean(text_mask.sum().float())
    return (clip_to_text + text_to_clip) / 2


def siglip(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
           bias: torch.Tensor | float) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023).

    ``-(1/B) Σ_i Σ_j log σ(z_ij (scale · a_i·b_j + bias))`` with ``z_ij = +1`` on matching pairs and
    ``-1`` elsewhere; rows are this rank's ``a``, columns every rank's ``b``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be [B, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    all_b = gather_with_grad(b)
    logits = (scale * a @ all_b.T + bias).float()
    z = -torch.ones_like(logits)
    rows = torch.arange(a.shape[0], device=a.device)
    z[rows, rows + shard_offset(a.shape[0])] = 1.0
    return -F.logsigmoid(z * logits).sum() / a.shape[0]


def sinkhorn_with_dustbin(scores: torch.Tensor, dustbin: torch.Tensor | float, eps: float = 0.05,
                          iters: int = 50) -> torch.Tensor:
    """Optimal transport of ``scores [B, C]`` with a "no match" row and column (SuperGlue's dustbin).

    Each of the ``B`` rows and ``C`` columns carries mass 1; the dustbin row carries ``C`` and the dustbin
    column ``B``, so any row or column may go unmatched. ``dustbin`` is the score of matching nothing.
    Entropic OT (``eps``) by log-domain Sinkhorn; returns the plan ``[B + 1, C + 1]`` (rows sum to their mass).
    """
    B, C = scores.shape
    z = torch.as_tensor(dustbin, dtype=scores.dtype, device=scores.device)
    full = torch.cat([torch.cat([scores, z.expand(B, 1)], 1), torch.cat([z.expand(1, C), z.expand(1, 1)], 1)], 0)
    log_k = full / eps
    log_mu = torch.log(torch.cat([scores.new_ones(B), scores.new_full((1,), float(C))]))
    log_nu = torch.log(torch.cat([scores.new_ones(C), scores.new_full((1,), float(B))]))
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(log_k + v[None, :], dim=1)
        v = log_nu - torch.logsumexp(log_k + u[:, None], dim=0)
    return (log_k + u[:, None] + v[None, :]).exp()


def aligned_mil_nce(video: torch.Tensor, texts: torch.Tensor, text_mask: torch.Tensor, scale: torch.Tensor | float,
                    dustbin: torch.Tensor, eps: float = 0.05, iters: int = 50) -> torch.Tensor:
    """MIL-NCE for noisy narration (Norton-style): a clip and its speech may not show the same thing.

    An OT plan (:func:`sinkhorn_with_dustbin`, no gradient) between this rank's clips and the global batch's
    mean positive texts gives each clip the share ``w`` of its mass matched rather than sent to "no match"
    (fillers, talk about something off screen). Clip→text: ``w`` of the MIL-NCE term, ``1 - w`` of choosing a
    learnable "no match" logit ``scale · dustbin`` (the dustbin competes in every row, so it is learnt);
    text→clip: each text's InfoNCE weighted by its clip's ``w``. With ``dustbin`` → −∞ this is :func:`mil_nce`.
    """
    B, P, D = texts.shape
    offset, all_video, all_texts, all_mask = _global_batch(video, texts, text_mask)
    n = all_texts.shape[0]
    rows = torch.arange(B, device=video.device)
    with torch.no_grad():
        mean_text = F.normalize((all_texts * all_mask[..., None]).sum(1), dim=-1)
        plan = sinkhorn_with_dustbin((video @ mean_text.T).float(), dustbin.detach().float(), eps, iters)
        w = 1.0 - plan[:B, n]  # share of each clip's mass that found a text

    logits = (scale * video @ all_texts.reshape(n * P, D).T).float()  # [B, n*P]
    logits = logits.masked_fill(~all_mask.reshape(1, n * P), float("-inf"))
    none = (scale * dustbin).float().expand(B, 1)
    owner = torch.arange(n, device=video.device).repeat_interleave(P)
    positive = owner[None, :] == (rows + offset)[:, None]
    total = torch.logsumexp(torch.cat([logits, none], 1), dim=1)
    matched = total - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    unmatched = total - none[:, 0]
    clip_to_text = (w * matched + (1 - w) * unmatched).mean()

    local_texts = texts[text_mask]
    counts = text_mask.sum(1)
    local_owner = rows.repeat_interleave(counts)
    ce = F.cross_entropy((scale * local_texts @ all_video.T).float(), local_owner + offset, reduction="none")
    text_to_clip = (ce * w[local_owner]).sum() / all_reduce_mean(text_mask.sum().float())
    return (clip_to_text + text_to_clip) / 2
