"""Drafting from an imported EchoPrime bank the way EchoPrime's ``generate_report`` and ``predict_metrics`` do.

Facts followed (from the publisher's code; none of it copied). A study is its videos' raw mViT embeddings
with each video's classified view. Per MIL section ``s``: every video is weighted by ``MIL_weights[s, its
view]`` (float32); for the text, the weighted videos are averaged and L2-normalised, scored by inner product
against every candidate embedding, and the best candidate whose report has the section gives it (the next
best when it lacks it; ties: the lower candidate index). For phenotypes, the weighted videos are summed and
normalised, the ``k = 50`` candidates with the highest inner products are taken (candidates need not have
the section), and a phenotype is the NaN-ignoring mean of their labels; the phenotypes of the i-th
``section_to_phenotypes`` key use the i-th MIL section's neighbours (as EchoPrime indexes them; the bank
records it as ``query_section``). medvid adds: a binary phenotype is called positive when its score reaches
its ``roc_thresholds.csv`` threshold; a section no candidate holds is left out (EchoPrime would not stop).
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medvid.errors import MedvidError
from medvid.report.echoprime_bank import EchoPrimeBank, extract_section, section_body
from medvid.report.encode import EncodedStudy, StageTimer
from medvid.report.phenotypes import DEFAULT_THRESHOLD

K = 50  # EchoPrime's predict_metrics default
MODEL_KINDS = {"model": "echoprime_video", "views": "echoprime_view"}


def check_models(model_dir: str, views_dir: str) -> None:
    """An EchoPrime bank drafts only with the imported EchoPrime encoder and view classifier (its candidates
    were embedded by that encoder; its MIL weights are per EchoPrime view): refused before any work."""
    from medvid.models.checkpoint import read_config

    for name, path in (("model", model_dir), ("views", views_dir)):
        kind = read_config(path).get("kind") if path else None
        if kind != MODEL_KINDS[name]:
            raise MedvidError(f"an imported EchoPrime bank drafts with `medvid import "
                              f"{'echoprime' if name == 'model' else 'echoprime-view'}`'s model as {name}= "
                              f"({path or 'none given'} is {kind or 'not such a model'})")


def section_queries(videos: Tensor, views: Sequence[int], weights: np.ndarray) -> tuple[Tensor, Tensor]:
    """``(text queries [S, D], phenotype queries [S, D])`` of one study: per section, the MIL-weighted mean
    (text) and sum (phenotypes) of its raw video embeddings ``[V, D]``, normalised."""
    videos = videos.float()
    text, pheno = [], []
    for s in range(weights.shape[0]):
        weighted = videos * torch.tensor(weights[s, list(views)], dtype=torch.float).unsqueeze(1)
        text.append(F.normalize(torch.mean(weighted, dim=0), dim=0))
        pheno.append(torch.sum(weighted, dim=0))
    return torch.stack(text), F.normalize(torch.stack(pheno))


@torch.no_grad()
def scan(bank: EchoPrimeBank, text_q: Tensor, pheno_q: Tensor, k: int = K,
         chunk: int = 65536) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One pass over the candidates for a batch: text queries ``[B, S, D]`` -> best candidate having section s
    (``scores [B, S]``, ``rows [B, S]``; -inf / -1 where none has it); phenotype queries ``[Q, D]`` -> top-k
    (``scores [Q, k]``, ``rows [Q, k]``, best first)."""
    b, s, _ = text_q.shape
    queries = torch.cat([text_q.reshape(b * s, -1), pheno_q]).float()
    best = torch.full((b, s), float("-inf"))
    best_row = torch.full((b, s), -1, dtype=torch.long)
    top = top_row = None
    for start in range(0, bank.rows, chunk):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            block = torch.from_numpy(np.ascontiguousarray(bank.embeddings[start:start + chunk]))
            has = torch.from_numpy(np.ascontiguousarray(bank.has_section[start:start + chunk])).T  # [S, c]
        sims = queries @ block.T
        text = sims[:b * s].view(b, s, -1).masked_fill(~has, float("-inf"))
        value, where = text.max(dim=2)  # first maximum on ties
        better = value > best
        best, best_row = torch.where(better, value, best), torch.where(better, where + start, best_row)
        p = sims[b * s:]
        v, i = p.topk(min(k, p.shape[1]), dim=1)
        if top is not None:
            v, i = torch.cat([top, v], 1), torch.cat([top_row, i + start], 1)
            v, pick = v.topk(min(k, v.shape[1]), dim=1)
            top, top_row = v, i.gather(1, pick)
        else:
            top, top_row = v, i + start
    return best, best_row, top, top_row


def phenotype_values(bank: EchoPrimeBank, rows: np.ndarray, query: dict[str, int]) -> dict[str, dict[str, Any]]:
    """drafts.jsonl phenotypes of one study from its top-k candidate ``rows [S, k]``: per phenotype the
    NaN-ignoring mean of the labels of its query section's neighbours; binary ones called at their threshold."""
    out = {}
    thresholds = bank.thresholds
    for j, (name, spec) in enumerate(bank.phenotypes.items()):
        y = np.asarray(bank.labels[rows[query[name]], j], dtype=np.float64)
        known = ~np.isnan(y)
        value = float(np.mean(y[known])) if known.any() else None
        base = {"method": "echoprime_knn", "k": int(rows.shape[1]), "n": int(known.sum())}
        if spec["kind"] == "binary":
            thr = float(thresholds.get(name, DEFAULT_THRESHOLD))
            out[name] = {"kind": "binary", "score": value, "threshold": thr,
                         "call": None if value is None else int(value >= thr), **base}
        else:
            out[name] = {"kind": "numeric", "value": value, **base}
    return out


class EchoPrimeDrafter:
    """Sections and phenotypes of encoded studies (raw video embeddings: ``StudyEncoder(raw_clips=True)``)
    from an imported EchoPrime bank; same drafts.jsonl blocks as :class:`medvid.report.draft.Drafter`."""

    def __init__(self, bank: EchoPrimeBank, view_names: Sequence[str], chunk: int = 65536):
        if list(view_names) != bank.views:
            raise MedvidError(f"{bank.dir}: the bank's MIL weights are for views {bank.views}, the view classifier "
                              f"gives {list(view_names)}")
        self.bank, self.chunk = bank, chunk
        self.query = {p: bank.sections.index(spec["query_section"]) for p, spec in bank.phenotypes.items()}

    def _view_index(self, study: EncodedStudy) -> list[int]:
        missing = [v for v in study.views if v not in self.bank.views]
        if missing:
            raise MedvidError(f"study {study.study_key}: videos without an EchoPrime view ({missing}); drafting "
                              "from an EchoPrime bank needs the imported view classifier (views=)")
        return [self.bank.views.index(v) for v in study.views]

    def draft(self, studies: Sequence[EncodedStudy], timer: StageTimer | None = None) -> list[dict[str, Any]]:
        """One drafts.jsonl block per study; the bank is scanned once for the batch."""
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        if not studies:
            return []
        weights = self.bank.section_weights
        views = [self._view_index(st) for st in studies]
        pairs = [section_queries(st.videos, v, weights) for st, v in zip(studies, views)]
        best, best_row, _, top_row = scan(self.bank, torch.stack([t for t, _ in pairs]),
                                          torch.cat([p for _, p in pairs]), K, self.chunk)
        n_sec = len(self.bank.sections)
        out = []
        for b, st in enumerate(studies):
            sections = {}
            for s, name in enumerate(self.bank.sections):
                row = int(best_row[b, s])
                if row < 0:  # no candidate holds the section
                    continue
                extracted = extract_section(self.bank.report(row), name)
                sections[name] = {
                    "text": section_body(extracted, name), "echoprime_text": extracted,
                    "neighbours": [{"study_key": str(self.bank.study_keys[row]),
                                    "similarity": round(float(best[b, s]), 4)}],
                    "videos": [{"video_key": vk, "view": v, "view_confidence": c,
                                "weight": round(float(weights[s, vi]), 4)}
                               for vk, v, c, vi in zip(st.video_keys, st.views, st.view_confidence, views[b])]}
            rows = top_row[b * n_sec:(b + 1) * n_sec].numpy()
            out.append({"study_key": st.study_key, "in_bank": False, "sections": sections,
                        "phenotypes": phenotype_values(self.bank, rows, self.query),
                        "videos": [{"video_key": vk, "view": v, "view_confidence": c, "view_source": src}
                                   for vk, v, c, src in zip(st.video_keys, st.views, st.view_confidence,
                                                            st.view_source)]})
        timer.add("retrieve", t0)
        return out
