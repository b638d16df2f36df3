"""Zero-shot heads over normalised embeddings and prompt embeddings computed once.

* phases: softmax over ``scale`` × cosine (SurgVLP protocol: scale 100), argmax = prediction;
* tools: multi-label, a sigmoid per tool over its cosine relative to a reference (the mean over all
  tool prompts, or the tool's "absent" sentence) with per-tool thresholds;
* echo findings (EchoCLIP style): binary scores from phrase similarity, numeric values read
  from the best-ranked candidates of a ``<#>``-expanded phrase.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvid.zeroshot.prompts import Finding, PromptSet, TextEncoder, embed_classes, ensemble, expand_numeric

TOOL_REFERENCES = ("tools", "absent")


def _cos(emb: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return F.normalize(emb.float(), dim=-1) @ classes.T


@dataclass
class PhaseClassifier:
    """Single-label head: ``probs = softmax(scale · cos(emb, class_emb))``."""

    class_emb: torch.Tensor  # [C, D], normalised
    classes: list[str]
    scale: float = 100.0

    @classmethod
    def from_prompts(cls, prompts: PromptSet, encode: TextEncoder, scale: float = 100.0) -> "PhaseClassifier":
        return cls(embed_classes(encode, prompts.prompts, prompts.classes), list(prompts.classes), scale)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * _cos(emb, self.class_emb)

    def probs(self, emb: torch.Tensor) -> torch.Tensor:
        return self.logits(emb).softmax(dim=-1)


@dataclass
class ToolClassifier:
    """Multi-label head: per tool ``p = sigmoid(scale · (cos(emb, tool) − ref))``. With ``reference="tools"``
    ``ref`` is the frame's mean cosine over all tool prompts (how much the frame looks like *this* tool
    rather than like instruments in general); with ``"absent"`` it is ``cos(emb, absent)`` when the
    prompt set has an "absent" sentence for the tool, else ``bias``. A tool is predicted present
    when ``p ≥ threshold`` (per tool, default 0.5)."""

    pos_emb: torch.Tensor  # [C, D]
    neg_emb: torch.Tensor | None  # [C, D]; rows of zeros where a tool has no negative
    classes: list[str]
    thresholds: torch.Tensor  # [C]
    scale: float = 100.0
    bias: float = 0.0
    reference: str = "absent"

    @property
    def class_emb(self) -> torch.Tensor:
        return self.pos_emb

    @class_emb.setter
    def class_emb(self, value: torch.Tensor) -> None:
        self.pos_emb = value

    @classmethod
    def from_prompts(cls, prompts: PromptSet, encode: TextEncoder, scale: float = 100.0,
                     default_threshold: float = 0.5, bias: float = 0.0, reference: str = "absent") -> "ToolClassifier":
        if reference not in TOOL_REFERENCES:
            raise ValueError(f"reference must be one of {TOOL_REFERENCES}, got {reference!r}")
        pos = embed_classes(encode, prompts.prompts, prompts.classes)
        neg = None
        with_neg = [c for c in prompts.classes if c in prompts.negatives]
        if with_neg:
            emb = embed_classes(encode, prompts.negatives, with_neg)
            neg = torch.zeros_like(pos)
            for row, c in zip(emb, with_neg):
                neg[prompts.classes.index(c)] = row
        thr = torch.tensor([prompts.thresholds.get(c, default_threshold) for c in prompts.classes])
        return cls(pos, neg, list(prompts.classes), thr, scale, bias, reference)

    def probs(self, emb: torch.Tensor) -> torch.Tensor:
        cos = _cos(emb, self.pos_emb)
        if self.reference == "tools":
            ref = cos.mean(dim=1, keepdim=True).expand_as(cos)
        elif self.neg_emb is not None:
            has_neg = self.neg_emb.abs().sum(dim=1) > 0
            ref = torch.where(has_neg, _cos(emb, self.neg_emb), torch.full_like(cos, self.bias))
        else:
            ref = torch.full_like(cos, self.bias)
        return torch.sigmoid(self.scale * (cos - ref))

    def predict(self, emb: torch.Tensor) -> torch.Tensor:
        return self.probs(emb) >= self.thresholds


@dataclass
class _FindingHead:
    finding: Finding
    pos: torch.Tensor  # binary: [1, D] ensembled; numeric: [V, D] one per candidate value
    neg: torch.Tensor | None


class FindingsClassifier:
    """EchoCLIP-style echo findings from report phrases.

    * binary: score = cosine with the ensembled positive phrases (a ranking score for AUROC);
      with negative phrases, the softmax probability of positive vs negative at ``scale``;
    * numeric: every phrase is expanded over the candidate values, similarities averaged over
      phrases per value, values ranked, and the prediction is the mean of the ``top_k``
      best-ranked values.
    """

    def __init__(self, findings: Sequence[Finding], encode: TextEncoder, scale: float = 100.0, top_k: int = 10):
        self.scale, self.top_k = scale, top_k
        self.heads: list[_FindingHead] = []
        for f in findings:
            if f.kind == "numeric":
                texts = [s for v in f.values for s in (expand_numeric(p, [v])[0] for p in f.prompts)]
                pos = ensemble(encode(texts), [len(f.prompts)] * len(f.values))
                self.heads.append(_FindingHead(f, pos, None))
            else:
                pos = ensemble(encode(f.prompts), [len(f.prompts)])
                neg = ensemble(encode(f.negatives), [len(f.negatives)]) if f.negatives else None
                self.heads.append(_FindingHead(f, pos, neg))

    def __call__(self, emb: torch.Tensor) -> dict[str, np.ndarray]:
        """``{finding: [N]}``: scores (binary) or predicted values (numeric) for ``N`` embeddings."""
        out = {}
        for h in self.heads:
            cos = _cos(emb, h.pos)
            if h.finding.kind == "numeric":
                values = torch.tensor(h.finding.values, dtype=torch.float32)
                k = min(self.top_k, len(values))
                top = cos.topk(k, dim=1).indices
                out[h.finding.name] = values[top].mean(dim=1).numpy()
            elif h.neg is not None:
                logits = self.scale * torch.cat([cos, _cos(emb, h.neg)], dim=1)
                out[h.finding.name] = logits.softmax(dim=1)[:, 0].numpy()
            else:
                out[h.finding.name] = cos[:, 0].numpy()
        return out
