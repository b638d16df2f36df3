"""Top-k search over a report bank, per section and batched over studies.

The bank is memory-mapped float16; each section is a contiguous row slice, so a section's queries
(one per study of the batch) are scored against that slice only, one matrix product per block of
rows, with a running top-k. All sections of a batch together read the bank once: drafting many
studies per batch amortises the scan.

Three ways to score, chosen by :class:`SearchOptions`:

* ``precision="bf16"`` (what the default ``auto`` picks on CPUs with AVX-512 BF16 or AMX, for sections
  of at least 32,768 rows and batches of at least 8 studies): the section is scored in bfloat16
  (oneDNN's kernels run 4-5x faster than MKL's float32 product on the CPU measured; see
  ``docs/BENCHMARKS.md``) to keep a shortlist of ``shortlist * k`` rows per query, which is then
  rescored exactly in float32 from the float16 rows. bfloat16 scores differ from float32 by < 1e-3 on
  unit vectors, so the shortlist holds the exact top-k unless more than ``(shortlist - 1) * k`` rows
  lie within that margin of the k-th (recall against the float32 scan is measured by
  ``bench/report.py``). With ``cache=True`` the bfloat16 copy of each section is kept in RAM after its
  first scan (as many bytes as the bank's float16 file).
* ``precision="fp32"``: the plain exact float32 scan.
* ``index="ann"``: the bank's approximate faiss index (:mod:`medvid.report.ann`, built by
  ``medvid bank build ann.kind=...``; needs the optional ``ann`` extra: ``pip install 'medvid[ann]'``).

A query never retrieves its own study or its patient's other studies: ``search(..., exclude=...)`` takes, per
query, the bank study indices to leave out (:meth:`StudyIndex.excluded`). The section's rows of those studies
are found from ``row_study`` (4 bytes a row, next to the 2 x dim bytes a row the scan reads); the scan then
asks for ``k + m`` rows (``m``: the most rows excluded for one query of the batch) and drops the excluded
ones, so every query still gets its exact ``k`` nearest other rows when the section has them.

``search`` takes an open :class:`medvid.report.bank.Bank` (which imports this module for its
:class:`SearchOptions`; this module imports no bank code).
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medvid.device import PRECISIONS
from medvid.errors import MedvidError

DEFAULT_CHUNK = 32768
INDEXES = ("exact", "ann")
MIN_BF16_QUERIES = 8      # precision=auto: fewer queries per section (a matrix-vector product) stay float32
MIN_BF16_ROWS = 32768     # precision=auto: smaller sections stay float32 (the rescoring costs more than it saves)


@dataclass(frozen=True)
class SearchOptions:
    """How :func:`search` scores a bank (see the module docstring)."""

    precision: str = "auto"   # bf16: bfloat16 shortlist rescored in float32 | fp32: exact float32 scan |
                              # auto: bf16 for large sections and batches where the CPU has native bfloat16
                              # products, else fp32
    shortlist: int = 2        # bf16: rows kept per query before rescoring, as a multiple of k
    cache: bool = True        # bf16: keep each section's bfloat16 copy in RAM after its first scan
    index: str = "exact"      # exact | ann (the bank's faiss index)
    nprobe: int = 32          # ann, IVF: lists visited per query
    ef_search: int = 128      # ann, HNSW: candidate list size

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise MedvidError(f"retrieval precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.index not in INDEXES:
            raise MedvidError(f"retrieval index must be one of {INDEXES}, got {self.index!r}")
        if self.shortlist < 1 or self.nprobe < 1 or self.ef_search < 1:
            raise MedvidError("retrieval shortlist, nprobe and ef_search must be >= 1")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX; Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _use_bf16(opt: SearchOptions, rows: int, queries: int) -> bool:
    """``bf16``/``fp32`` as asked; ``auto``: bfloat16 on a CPU with native bfloat16 products, for a section of
    at least ``MIN_BF16_ROWS`` rows scored for at least ``MIN_BF16_QUERIES`` queries (smaller scans gain
    nothing over float32: measured in ``docs/BENCHMARKS.md``)."""
    if opt.precision != "auto":
        return opt.precision == "bf16"
    return rows >= MIN_BF16_ROWS and queries >= MIN_BF16_QUERIES and native_bf16()


def _tensor(block: np.ndarray) -> Tensor:
    """A read-only (memory-mapped) block as a tensor without a copy; it is only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(block))


def _merge(best: tuple[Tensor, Tensor] | None, s: Tensor, i: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Running top-``k`` of ``best`` and a new block's candidates ``(scores, rows)``."""
    if best is not None:
        s, i = torch.cat([best[0], s], 1), torch.cat([best[1], i], 1)
    top, pick = s.topk(min(k, s.shape[1]), dim=1)
    return top, i.gather(1, pick)


def _scan(blocks, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` of ``q @ block.T`` over ``blocks`` (an iterable of ``(first row, block tensor)``)."""
    best = None
    for start, block in blocks:
        sims = q @ block.T
        s, i = sims.topk(min(k, sims.shape[1]), dim=1)
        best = _merge(best, s, i + start, k)
    return best


@torch.no_grad()
def topk_rows(matrix: np.ndarray, queries: Tensor, k: int, chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact float32 top-``k`` inner products of ``queries [Q, D]`` against the rows of ``matrix [N, D]``
    (any float dtype, memory-mapped or not), read ``chunk`` rows at a time. Returns ``(scores [Q, k'],
    rows [Q, k'])``, best first, ``k' = min(k, N)``."""
    q = queries.float()
    blocks = ((s, _tensor(matrix[s:s + chunk]).float())
              for s in range(0, matrix.shape[0], chunk))
    return _scan(blocks, q, min(k, matrix.shape[0]))


def _rescore(matrix: np.ndarray, q: Tensor, rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact float32 scores of each query's candidate ``rows [Q, K']``; the best ``k``."""
    vectors = _tensor(matrix).index_select(0, rows.flatten()).view(*rows.shape, -1).float()
    scores = torch.bmm(vectors, q.unsqueeze(2)).squeeze(2)
    top, pick = scores.topk(min(k, scores.shape[1]), dim=1)
    return top, rows.gather(1, pick)


@torch.no_grad()
def topk_rows_bf16(matrix: np.ndarray, queries: Tensor, k: int, shortlist: int = 2, chunk: int = DEFAULT_CHUNK,
                   cached: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` as :func:`topk_rows`, scanning in bfloat16 for a shortlist of ``shortlist * k`` rows per
    query that is rescored in float32. ``cached``: the bfloat16 copy of ``matrix`` (else converted per
    chunk)."""
    q = queries.float()
    n = matrix.shape[0]
    k = min(k, n)
    if cached is not None:
        blocks = ((s, cached[s:s + chunk]) for s in range(0, n, chunk))
    else:
        blocks = ((s, _tensor(matrix[s:s + chunk]).bfloat16())
                  for s in range(0, n, chunk))
    _, rows = _scan(blocks, q.bfloat16(), min(n, shortlist * k))
    return _rescore(matrix, q, rows, k)


def _bf16_section(bank: Any, section: str, matrix: np.ndarray, cache: bool) -> Tensor | None:
    if not cache:
        return None
    store = bank.search_cache
    if section not in store:
        store[section] = _tensor(matrix).bfloat16()
    return store[section]


class Hits(NamedTuple):
    """One section's search result, best first: ``similarities [Q, w]`` and global bank ``rows [Q, w]``. A query
    left with fewer than ``w`` rows (its own studies excluded from a small section) is padded with row -1
    (similarity -inf): read one query through :meth:`of`."""

    similarities: Tensor
    rows: Tensor

    def of(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, rows)`` of query ``b``, padding removed."""
        rows = self.rows[b].numpy()
        keep = rows >= 0
        return self.similarities[b].numpy()[keep], rows[keep]


class _KeyLookup:
    """Positions of a key in an array of strings (memory-mapped or not): binary search over its sorted order
    (the array itself when already sorted, as a video bank's study keys are), no per-key Python objects."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.order = None if len(keys) < 2 or bool(np.all(keys[1:] >= keys[:-1])) else np.argsort(keys, kind="stable")

    def find(self, key: str) -> np.ndarray:
        lo, hi = (int(np.searchsorted(self.keys, key, side=side, sorter=self.order)) for side in ("left", "right"))
        return np.arange(lo, hi) if self.order is None else self.order[lo:hi]


class StudyIndex:
    """The bank's study indices by study key and by patient key, so that a query study retrieves neither itself
    nor another study of its patient. Patient keys come from the bank's studies table (``patient_key``; a bank
    built without it excludes by study key only) and from the query (the ingest's ``patient_key``)."""

    def __init__(self, study_keys: np.ndarray, patient_keys: np.ndarray | None = None):
        self.study_keys, self.patient_keys = study_keys, patient_keys
        self._studies = _KeyLookup(study_keys)
        self._patients = _KeyLookup(patient_keys) if patient_keys is not None else None

    @classmethod
    def of_bank(cls, bank: Any) -> StudyIndex:
        """The index of an open bank (its memory-mapped ``study_keys`` and, when the bank has one, the studies
        table's ``patient_key`` column)."""
        import pyarrow.parquet as pq

        path = bank.dir / "studies.parquet"
        patients = None
        if "patient_key" in pq.read_schema(path).names:
            column = pq.read_table(path, columns=["patient_key"]).column(0).fill_null("")
            patients = np.asarray(column.to_pylist(), dtype=str)
        return cls(bank.study_keys, patients)

    def own(self, study_key: str) -> int | None:
        """The bank's index of ``study_key``; None when the bank does not hold it."""
        found = self._studies.find(str(study_key))
        return int(found[0]) if len(found) else None

    def excluded(self, study_key: str, patient_key: str = "") -> np.ndarray:
        """Bank study indices the query ``study_key`` must not retrieve: its own and, with its patient known (from
        the query, else from the bank's row of the same study), every study of that patient."""
        own = self.own(study_key)
        if not patient_key and own is not None and self.patient_keys is not None:
            patient_key = str(self.patient_keys[own])
        out = self._patients.find(patient_key) if patient_key and self._patients is not None else np.zeros(0, np.int64)
        return np.union1d(out, [] if own is None else [own]).astype(np.int64)


def patients_of(videos: Any) -> dict[str, str]:
    """``{study_key: patient_key}`` of an ingest's videos table (empty patient keys left out; none without the
    column)."""
    if "patient_key" not in videos:
        return {}
    pairs = videos[["study_key", "patient_key"]].drop_duplicates("study_key")
    return {str(s): str(p) for s, p in zip(pairs["study_key"], pairs["patient_key"]) if isinstance(p, str) and p}


def _excluded_rows(row_study: np.ndarray, exclude: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per query, the section-local rows (of ``row_study``, the section's study per row) of its excluded studies."""
    union = np.unique(np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude]))
    if not len(union):
        return [np.zeros(0, np.int64)] * len(exclude)
    rows = np.flatnonzero(np.isin(row_study, union))
    studies = row_study[rows]
    return [rows[np.isin(studies, e)] for e in exclude]


def _drop(s: Tensor, i: Tensor, excluded: Sequence[np.ndarray], k: int) -> tuple[Tensor, Tensor]:
    """Each query's best ``k`` of its candidates ``(s, i)`` (section-local rows) outside its ``excluded`` rows,
    padded with row -1 / similarity -inf to the longest."""
    keep = [~np.isin(i[b].numpy(), e) for b, e in enumerate(excluded)]
    width = max([min(k, int(m.sum())) for m in keep] + [0])
    sims = torch.full((len(keep), width), float("-inf"))
    rows = torch.full((len(keep), width), -1, dtype=torch.long)
    for b, m in enumerate(keep):
        pick = torch.from_numpy(np.flatnonzero(m)[:width])
        sims[b, :len(pick)], rows[b, :len(pick)] = s[b, pick], i[b, pick]
    return sims, rows


def search(bank: Any, queries: Mapping[str, Tensor], k: int, chunk: int = DEFAULT_CHUNK,
           options: SearchOptions | None = None,
           exclude: Sequence[np.ndarray] | None = None) -> dict[str, Hits]:
    """Per section name, the ``k`` nearest bank rows *of that section* (cosine; queries are normalised)
    for each query row: ``{section: Hits(similarities [Q, k'], global bank rows [Q, k'])}``. A section the
    bank does not hold is left out. ``options`` default to the bank's (``Bank.search_options``). ``exclude``:
    per query row, bank study indices whose rows it must not retrieve (:meth:`StudyIndex.excluded`); the
    result is then each query's exact ``k`` nearest among the other rows (see the module docstring)."""
    opt = options or getattr(bank, "search_options", None) or SearchOptions()
    out = {}
    if exclude is not None and any(len(exclude) != len(q) for q in queries.values()):
        raise ValueError(f"exclude has {len(exclude)} entries, not one per query row")
    for section, q in queries.items():
        start, stop = bank.section_slice(section)
        if stop <= start or len(q) == 0:
            continue
        q = F.normalize(q.float(), dim=-1)
        matrix = bank.embeddings[start:stop]
        dropped = _excluded_rows(np.asarray(bank.row_study[start:stop]), exclude) if exclude is not None else []
        extra = max([len(d) for d in dropped] + [0])
        wanted = k + extra
        if opt.index == "ann":
            s, i = bank.ann_index(section).search(q, wanted, nprobe=opt.nprobe, ef_search=opt.ef_search)
            short = (i < 0).any(dim=1)
            if short.any():  # the probed lists held too few rows: those queries get the exact scan
                s[short], i[short] = topk_rows(matrix, q[short], wanted, chunk)
        elif _use_bf16(opt, stop - start, len(q)):
            s, i = topk_rows_bf16(matrix, q, wanted, opt.shortlist, chunk,
                                  _bf16_section(bank, section, matrix, opt.cache))
        else:
            s, i = topk_rows(matrix, q, wanted, chunk)
        if extra:
            s, i = _drop(s, i, dropped, k)
        out[section] = Hits(s, torch.where(i >= 0, i + start, i))
    return out
