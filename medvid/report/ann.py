"""Approximate nearest-neighbour index of one bank section (faiss, the optional ``ann`` extra): built by
``medvid bank build ann.kind=ivf|hnsw``, searched by :func:`medvid.report.retrieval.search` with
``index="ann"``. faiss is imported only here, and only when an index is built or opened.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from medvid.errors import MedvidError

ANN_KINDS = ("ivf", "hnsw")
ANN_HINT = "install the optional faiss dependency: pip install 'medvid[ann]' (faiss-cpu)"



def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise MedvidError(f"an approximate bank index needs faiss, which is not installed; {ANN_HINT}") from exc
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


def check_ann(kind: str) -> None:
    """Refuse an unknown index kind, or any when faiss is missing (before heavy work)."""
    if kind not in ANN_KINDS:
        raise MedvidError(f"ann.kind must be one of {ANN_KINDS} (or none), got {kind!r}")
    _faiss()


def build_ann(matrix: np.ndarray, kind: str, nlist: int | None = None, hnsw_m: int = 32, seed: int = 0):
    """An inner-product faiss index over ``matrix`` rows: ``ivf`` (IVF lists of float16 vectors,
    ``nlist`` = 4 sqrt(n) by default, k-means on at most 64 vectors per list) or ``hnsw`` (graph of
    float32 vectors, ``hnsw_m`` links per node)."""
    faiss = _faiss()
    x = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = x.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind == "ivf":
        nlist = max(1, min(nlist or int(4 * np.sqrt(n)), n // 8 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample = x if n <= 64 * nlist else x[np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)]
        index.train(sample)
    else:
        check_ann(kind)
    index.add(x)
    return index


class AnnIndex:
    """A saved faiss index of one bank section, searched for batches of queries."""

    def __init__(self, path: str, kind: str):
        faiss = _faiss()
        self.kind = kind
        self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if kind == "ivf" else 0)

    @torch.no_grad()
    def search(self, queries: Tensor, k: int, nprobe: int = 32, ef_search: int = 128) -> tuple[Tensor, Tensor]:
        """``(similarities [Q, k'], section rows [Q, k'])``, best first; a row of -1 where the probed lists
        held fewer than ``k'`` vectors."""
        if self.kind == "ivf":
            self.index.nprobe = nprobe
        else:
            self.index.hnsw.efSearch = max(ef_search, k)
        sims, rows = self.index.search(np.ascontiguousarray(queries.float().numpy()), min(k, self.index.ntotal))
        return torch.from_numpy(sims), torch.from_numpy(rows.astype(np.int64))


def save_ann(index, path) -> None:
    _faiss().write_index(index, str(path))
