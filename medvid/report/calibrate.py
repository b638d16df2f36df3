"""Calibrating a report bank's phenotypes (``medvid bank calibrate``): on a labelled split, choose per phenotype
between the drafting kNN vote and a linear head fitted on the bank's rows, and a Youden threshold per binary
phenotype, scored exactly as drafting scores them (same :class:`medvid.report.draft.DraftSettings`; a study never
retrieves its own or its patient's bank rows).

A threshold is fitted only with at least ``MIN_PER_CLASS`` positive and negative calibration studies: on fewer, Youden's
J picks whatever score separates a handful of studies (4 validation studies gave a threshold of 1.0), so the
threshold is left as it was and the reason recorded (``threshold_skipped``).

Per section, :func:`choose_text_sources` compares on the same split the neighbours' text with the bank's prior text
(:func:`medvid.report.section_text.prior_texts`): a section whose retrieval does not beat the prior there (token F1
plus finding agreement; e.g. a section whose wording the images do not determine, where the nearest study's
wording is a random draw) takes the prior in every draft.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from medvid.metrics import auroc
from medvid.report.bank import Bank
from medvid.report.draft import DraftSettings, Drafter
from medvid.report.evaluate import draft_sections, section_agreement
from medvid.report.phenotypes import (KNN_KS, knn_phenotypes, predict_linear, section_training_set, select_models,
                                      youden_threshold)
from medvid.report.retrieval import StudyIndex, search

MIN_PER_CLASS = 5  # positive and negative calibration studies a binary phenotype needs for a threshold


def calibrate_phenotypes(bank: Bank, pheno_section: Mapping[str, str], studies: Sequence,
                         targets: Mapping[str, np.ndarray], settings: DraftSettings, select: bool,
                         patients: Mapping[str, str] | None = None) -> tuple[dict, dict, dict, dict]:
    """Per phenotype, on the calibration ``studies`` (:class:`medvid.report.encode.EncodedStudy`, ``targets``
    their labels): the model (kNN k or linear head fitted on the bank's rows,
    :func:`medvid.report.phenotypes.select_models`; with ``select`` false the drafting kNN) and, for binary
    phenotypes with at least ``MIN_PER_CLASS`` studies of each class, the Youden threshold of its scores (else
    ``threshold_skipped`` says why). ``patients``: study key -> patient key, whose bank rows a study does not
    retrieve. Returns ``(thresholds, per-phenotype info, models, linear heads)``, as
    :meth:`medvid.report.bank.Bank.set_thresholds` stores them."""
    names = list(bank.phenotypes)
    sections = sorted(set(pheno_section.values()))
    queries = {s: torch.stack([st.embeddings[st.sections.index(s)] for st in studies]).float() for s in sections}
    ks = sorted({int(settings.knn_k)} | (set(KNN_KS) if select else set()))
    index, patients = StudyIndex.of_bank(bank), patients or {}
    hits = search(bank, queries, max(ks),
                  exclude=[index.excluded(st.study_key, patients.get(st.study_key, "")) for st in studies])
    thresholds, info, models, heads = {}, {}, {}, {}
    for p, s in pheno_section.items():
        kind, y = bank.phenotypes[p], targets[p]
        knn_val = {}
        found = [hits[s].of(b) for b in range(len(studies))]
        labels = [np.asarray(bank.labels[np.asarray(bank.row_study[rows])])[:, [names.index(p)]] for _, rows in found]
        for k in ks:
            blocks = [knn_phenotypes(sims, labels[b], [p], bank.phenotypes, {}, k, settings.knn_temperature)[p]
                      for b, (sims, _) in enumerate(found)]
            knn_val[k] = np.array([np.nan if (v := bl.get("score", bl.get("value"))) is None else v for bl in blocks])
        if select:
            train = section_training_set(bank.embeddings, bank.row_study, bank.labels, names.index(p),
                                         bank.section_slice(s))
            spec, head, scores = select_models(kind, y, knn_val, train, queries[s].numpy())
        else:
            spec, head, scores = {"method": "knn", "k": int(settings.knn_k)}, None, {}
        pred = (predict_linear(head["w"], head["b"], queries[s].numpy(), kind) if head is not None
                else knn_val[spec.get("k", int(settings.knn_k))])
        models[p] = {**spec, "section": s, "validation": scores}
        if head is not None:
            heads[p] = head
        keep = ~(np.isnan(y) | np.isnan(pred))
        entry: dict[str, Any] = {"n": int(keep.sum()), "model": {k: v for k, v in spec.items() if k != "n"}}
        if kind == "binary":
            yk, sk = y[keep], pred[keep]
            entry["positives"] = int(yk.sum())
            if len(set(yk.tolist())) == 2:
                entry["auroc"] = round(auroc(yk, sk), 4)
            if min(yk.sum(), len(yk) - yk.sum()) >= MIN_PER_CLASS:
                thresholds[p] = youden_threshold(yk, sk)
                entry["threshold"] = round(thresholds[p], 4)
            else:
                entry["threshold_skipped"] = (f"{int(yk.sum())} positive and {int(len(yk) - yk.sum())} negative "
                                              f"studies; a threshold needs {MIN_PER_CLASS} of each")
        else:
            entry["mae"] = round(float(np.mean(np.abs(y[keep] - pred[keep]))), 4) if keep.any() else None
        info[p] = entry
    return thresholds, info, models, heads


def choose_text_sources(bank: Bank, studies: Sequence, truth: Mapping[str, Mapping[str, str]], settings: DraftSettings,
                        patients: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per bank section, on the calibration ``studies`` whose true report has it (``truth``: study key ->
    {section: text}): token F1 and finding agreement of drafts that take the neighbours' text and of drafts that
    take the bank's prior text (both consistent with the calls, as drafting is), and the ``text_source`` chosen:
    ``prior`` unless the neighbours' text scores higher (the sum of both: retrieval must beat the prior), else
    ``neighbours``. Sections no calibration study reports keep ``neighbours``."""
    scores = {}
    for source in ("neighbours", "prior"):
        drafter = Drafter(bank, settings, patients=patients, text_sources={s: source for s in bank.sections})
        drafts = {d["study_key"]: draft_sections(d) for d in drafter.draft(list(studies))}
        scores[source] = section_agreement(drafts, {k: v for k, v in truth.items() if k in drafts})["sections"]
    out = {}
    for s in bank.sections:
        n, p = scores["neighbours"].get(s), scores["prior"].get(s)
        if n is None or p is None:
            out[s] = {"text_source": "neighbours", "n": 0}
            continue
        beaten = n["token_f1"] + n["finding_agreement"] > p["token_f1"] + p["finding_agreement"]
        out[s] = {"text_source": "neighbours" if beaten else "prior", "n": n["n"],
                  **{f"{src}_{m}": round(scores[src][s][m], 4) for src in ("neighbours", "prior")
                     for m in ("token_f1", "finding_agreement")}}
    return out
