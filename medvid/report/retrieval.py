"""Exact top-k search over a report bank, per section and batched over studies.

The bank is memory-mapped float16; each section is a contiguous row slice, so a section's queries
(one per study of the batch) are scored against that slice only, in chunks (``q @ X.T`` in float32,
then a running top-k). All sections of a batch together read the bank once: the scan is
memory-bound, so drafting many studies per batch amortises it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medvid.report.bank import Bank

DEFAULT_CHUNK = 32768


@torch.no_grad()
def topk_rows(matrix: np.ndarray, queries: Tensor, k: int, chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` inner products of ``queries [Q, D]`` against the rows of ``matrix [N, D]`` (any float
    dtype, memory-mapped or not), read ``chunk`` rows at a time. Returns ``(scores [Q, k'], rows [Q, k'])``,
    best first, ``k' = min(k, N)``."""
    q = queries.float()
    n = matrix.shape[0]
    k = min(k, n)
    best_s = q.new_full((q.shape[0], 0), float("-inf"))
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, n, chunk):
        block = torch.from_numpy(np.asarray(matrix[start:start + chunk], dtype=np.float32))
        sims = q @ block.T
        s, i = sims.topk(min(k, sims.shape[1]), dim=1)
        best_s, pick = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, pick)
    return best_s, best_i


def search(bank: Bank, queries: Mapping[str, Tensor], k: int, chunk: int = DEFAULT_CHUNK) -> dict[str, tuple[Tensor, Tensor]]:
    """Per section name, the ``k`` nearest bank rows *of that section* (cosine; queries are normalised)
    for each query row: ``{section: (similarities [Q, k'], global bank rows [Q, k'])}``. A section the
    bank does not hold is left out."""
    out = {}
    for section, q in queries.items():
        start, stop = bank.section_slice(section)
        if stop <= start or len(q) == 0:
            continue
        s, i = topk_rows(bank.embeddings[start:stop], F.normalize(q.float(), dim=-1), k, chunk)
        out[section] = (s, i + start)
    return out
