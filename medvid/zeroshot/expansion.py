"""Prompts that meet the corpus's language: each class prompt set is widened with its nearest
sentences of the pretraining narration, found in text space only (no video, no labels).

For every corpus sentence the class whose ensembled prompt embedding is nearest is found; a
sentence joins that class only when it is nearer to it than to any other class by ``margin``
(cosine). Each class keeps its ``k`` nearest such sentences, and its embedding becomes the
normalised mix ``(1 − weight) · prompts + weight · mean(neighbours)``. The corpus is de-duplicated
and sorted first, and ties are broken by the sentence text, so the result is deterministic and
does not depend on the corpus's order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvid.errors import MedvidError
from medvid.zeroshot.prompts import TextEncoder
from medvid.utils import iter_jsonl


def corpus_sentences(path: str | os.PathLike) -> list[str]:
    """Sorted unique sentences of a narration corpus: a ``pairs.jsonl`` of ``medvid lectures index``
    (``text`` and ``extra_texts`` of every pair) or a folder of them."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise MedvidError(f"{path}: no pairs.jsonl corpus found")
    out: set[str] = set()
    for f in files:
        for _, row in iter_jsonl(f):
            texts = [row.get("text", ""), *(row.get("extra_texts") or [])]
            out.update(t.strip() for t in texts if isinstance(t, str) and t.strip())
    if not out:
        raise MedvidError(f"{path}: the corpus holds no sentences")
    return sorted(out)


@dataclass
class Expansion:
    """Class embeddings ``[C, D]`` after expansion and the sentences each class took (for the report)."""

    class_emb: torch.Tensor
    neighbours: dict[str, list[str]]


def expand_classes(class_emb: torch.Tensor, classes: Sequence[str], corpus: Sequence[str], encode: TextEncoder,
                   k: int = 8, weight: float = 0.5, margin: float = 0.02, batch: int = 512) -> Expansion:
    """Widen ``class_emb`` (normalised, one row per class) with the nearest ``k`` corpus sentences
    of each class (see the module docstring)."""
    if k < 1 or not 0.0 <= weight <= 1.0:
        raise ValueError(f"need k >= 1 and 0 <= weight <= 1, got k={k}, weight={weight}")
    sentences = sorted(set(corpus))
    if not sentences:
        return Expansion(class_emb, {c: [] for c in classes})
    emb = torch.cat([encode(sentences[i:i + batch]) for i in range(0, len(sentences), batch)])
    sim = (F.normalize(emb.float(), dim=-1) @ class_emb.T).numpy()  # [S, C]
    top2 = np.sort(sim, axis=1)[:, -2:] if sim.shape[1] > 1 else np.concatenate([sim - 1, sim], 1)
    owner = sim.argmax(1)
    clear = top2[:, 1] - top2[:, 0] >= margin
    rows, picked = [], {}
    for c, name in enumerate(classes):
        idx = np.flatnonzero((owner == c) & clear)
        idx = idx[np.lexsort((idx, -sim[idx, c]))][:k]  # nearest first; ties by sentence order (sorted text)
        picked[name] = [sentences[i] for i in idx]
        row = class_emb[c]
        if len(idx):
            row = (1 - weight) * row + weight * F.normalize(emb[idx].float().mean(0), dim=-1)
        rows.append(F.normalize(row, dim=-1))
    return Expansion(torch.stack(rows), picked)
