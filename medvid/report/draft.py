"""Retrieval-augmented report drafting (the core of ``medvid draft``): per section, the nearest bank studies
*that have that section* (:func:`medvid.report.retrieval.search`, batched over studies), their text (chosen to
agree with the draft's phenotype calls, :mod:`medvid.report.section_text`), and phenotypes by kNN over the bank
labels (or the per-phenotype models ``bank calibrate`` chose). Studies come encoded by :mod:`medvid.report.encode`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.report.bank import Bank
from medvid.report.encode import EncodedStudy, StageTimer
from medvid.report.phenotypes import clinical_value, display, draft_phenotypes
from medvid.report.retrieval import StudyIndex, search
from medvid.report.section_text import choose_text, prior_texts, sample_rows, section_calls


PHENOTYPE_SECTIONS = {"ef": "Left Ventricle", "reduced_ef": "Left Ventricle", "lv_dilation": "Left Ventricle",
                      "la_dilation": "Left Atrium", "pericardial_effusion": "Pericardium",
                      "mitral_regurgitation": "Mitral Valve", "tricuspid_regurgitation": "Tricuspid Valve"}


@dataclass
class DraftSettings:
    """How sections and phenotypes are drawn from the bank (the ``drafting:`` settings of ``medvid draft`` and
    ``medvid bank calibrate``, which scores phenotypes exactly as drafting does)."""

    neighbours: int = setting(5, "neighbours listed per section in drafts.jsonl")
    consensus: int = setting(1, "1 = the nearest study's text; k > 1 = similarity-weighted vote over the k nearest "
                                "texts")
    knn_k: int = setting(50, "neighbours voting for phenotypes")
    knn_temperature: Optional[float] = setting(0.1, "kNN weights exp((similarity - best) / T); null = plain "
                                                    "similarity weights")
    phenotype_sections: dict[str, str] = setting(
        help="labels.csv column -> section whose study embedding finds its neighbours",
        factory=lambda: dict(PHENOTYPE_SECTIONS))
    default_section: str = setting("Left Ventricle", "section whose neighbours vote for phenotypes not in "
                                                     "phenotype_sections")
    consistent: bool = setting(True, "true: a section's text is the nearest that agrees with the calls of its "
                                     "phenotypes (a remaining contradiction is flagged as a conflict); false: the "
                                     "nearest text")


class Drafter:
    """Sections, neighbours and kNN phenotypes for batches of encoded studies from one bank. A study never
    retrieves its own bank rows nor those of its patient's studies (``patients``: study key -> patient key, from
    the ingest; :class:`medvid.report.retrieval.StudyIndex`). ``text_sources``: section -> ``"prior"`` for the
    sections that take the bank's prior texts instead of their neighbours' (default: ``bank calibrate``'s choice)."""

    def __init__(self, bank: Bank, settings: DraftSettings, chunk: int = 32768,
                 patients: Mapping[str, str] | None = None, text_sources: Mapping[str, str] | None = None):
        self.bank, self.s, self.chunk = bank, settings, chunk
        self.text_sources = dict(calibrated_text_sources(bank) if text_sources is None else text_sources)
        self._priors: dict[str, list[str]] = {}
        self.index, self.patients = StudyIndex.of_bank(bank), dict(patients or {})
        self.pheno_names = list(bank.phenotypes)
        sections = bank.sections
        if not sections:
            raise MedvidError(f"{bank.dir}: the bank has no rows")
        fallback = settings.default_section if settings.default_section in sections else sections[0]
        chosen = dict(settings.phenotype_sections)
        self.pheno_section = {p: chosen.get(p, fallback) for p in self.pheno_names}
        self.pheno_section = {p: s if s in sections else fallback for p, s in self.pheno_section.items()}

    def draft(self, studies: Sequence[EncodedStudy], timer: StageTimer | None = None) -> list[dict[str, Any]]:
        """One drafts.jsonl block (``sections``, ``phenotypes``, ``videos``, ``in_bank``) per study; the bank is
        scanned once for the whole batch."""
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        if not studies:
            return []
        in_bank = set(self.bank.sections)
        names = [s for s in studies[0].sections if s in in_bank]
        queries = {s: torch.stack([st.embeddings[st.sections.index(s)] for st in studies]) for s in names}
        k = max([self.s.neighbours, self.s.consensus, self.s.knn_k]
                + [int(m.get("k", 0)) for m in self.bank.phenotype_models.values()])
        exclude = [self.index.excluded(st.study_key, self.patients.get(st.study_key, "")) for st in studies]
        hits = search(self.bank, queries, k, self.chunk, exclude=exclude)
        out = []
        for b, st in enumerate(studies):
            sections, phenotypes = {}, self._phenotypes(hits, b, st)
            for s in names:
                sims, rows = hits[s].of(b)
                if not len(rows):  # the section's only rows are the study's own (or its patient's)
                    continue
                keys = self.bank.study_keys[self.bank.row_study[rows[:self.s.neighbours]]]
                si = st.sections.index(s)
                sections[s] = {
                    **self._text(s, sims, rows, phenotypes),
                    "neighbours": [{"study_key": str(key), "similarity": round(float(v), 4)}
                                   for key, v in zip(keys, sims)],
                    "videos": [{"video_key": vk, "view": v, "view_confidence": c, "weight": round(float(w), 4)}
                               for vk, v, c, w in zip(st.video_keys, st.views, st.view_confidence, st.weights[si])]}
            out.append({"study_key": st.study_key, "in_bank": self.index.own(st.study_key) is not None,
                        "sections": sections, "phenotypes": phenotypes,
                        "videos": [{"video_key": vk, "view": v, "view_confidence": c, "view_source": src}
                                   for vk, v, c, src in zip(st.video_keys, st.views, st.view_confidence, st.view_source)]})
        timer.add("retrieve", t0)
        return out

    def _text(self, section: str, sims: np.ndarray, rows: np.ndarray,
              phenotypes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The section's ``text``, ``text_source`` (``nearest`` | ``consistent`` | ``prior``) and ``conflict``
        (None, or the call its text contradicts with an agreeing alternative): the nearest neighbour's text (or
        the ``consensus`` vote), passing over texts that contradict the section's calls; a row whose text the
        bank withheld (no sentence shared by enough patients) only votes on phenotypes."""
        calls = section_calls(phenotypes, self.pheno_section, section) if self.s.consistent else {}
        prior = self.text_sources.get(section) == "prior"
        if prior:
            candidates = ((t, 1.0) for t in self.priors(section))
        else:
            candidates = ((t, float(sim)) for row, sim in zip(rows, sims) if (t := self.bank.texts([row])[0]))
        chosen = choose_text(candidates, calls, self.s.consensus, self.priors(section) if calls else ())
        source = "prior" if prior else "consistent" if chosen["skipped"] else "nearest"
        return {"text": chosen["text"], "text_source": source, "conflict": chosen["conflict"]}

    def priors(self, section: str) -> list[str]:
        """The bank's prior texts of ``section``, best first (:func:`medvid.report.section_text.prior_texts` over
        an even sample of its rows; computed once)."""
        if section not in self._priors:
            self._priors[section] = prior_texts(self.bank.texts(sample_rows(*self.bank.section_slice(section))))
        return self._priors[section]

    def _phenotypes(self, hits: dict[str, tuple[Tensor, Tensor]], b: int, study: EncodedStudy) -> dict[str, dict[str, Any]]:
        queries = {s: study.embeddings[study.sections.index(s)].float().numpy() for s in set(self.pheno_section.values())}
        return draft_phenotypes(self.bank, hits, b, queries, self.pheno_section, self.s.knn_k, self.s.knn_temperature)


def calibrated_text_sources(bank: Bank) -> dict[str, str]:
    """Section -> ``"prior"`` | ``"neighbours"`` as ``bank calibrate`` chose on validation (empty before)."""
    chosen = (bank.manifest.get("calibration") or {}).get("sections") or {}
    return {s: str(c.get("text_source", "neighbours")) for s, c in chosen.items()}


def left_out_note(left_out: Sequence[Mapping[str, str]]) -> str:
    """One line naming the loops a draft was made without (pseudonymous video keys and reasons); "" if none."""
    if not left_out:
        return ""
    loops = ", ".join(f"{e['video_key']} ({e['reason']})" for e in left_out)
    return f"Drafted without {len(left_out)} loop(s) that could not be read: {loops}."


def render_text(draft: Mapping[str, Any]) -> str:
    """The readable ``drafts/<study_key>.txt``: a DRAFT banner, the loops left out (if any), ``Section: text``
    lines (a conflict with a call under its section), phenotypes as estimates at clinical precision."""
    lines = ["DRAFT - generated by medvid from similar prior reports; not reviewed, not for clinical use.",
             f"Study: {draft['study_key']}"]
    lines += [note] if (note := left_out_note(draft.get("left_out", []))) else []
    lines += [""]
    for name, sec in draft["sections"].items():
        lines.append(f"{name}: {sec['text']}")
        if (c := sec.get("conflict")):
            alternative = f" Alternative: {c['alternative']}" if c.get("alternative") else ""
            lines.append(f"  CONFLICT: the text contradicts the {', '.join(c['phenotypes'])} call "
                         f"({'positive' if c['call'] else 'negative'}).{alternative}")
    if draft.get("phenotypes"):
        lines += ["", "Phenotypes (estimates from similar prior studies, not measurements):"]
        lines += [f"  {name}: {p.get('display') or display(name, p)}" for name, p in draft["phenotypes"].items()]
    if draft.get("findings"):
        lines += ["", "Zero-shot findings (EchoCLIP-style, text prompts):"]
        for name, f in draft["findings"].items():
            value = clinical_value(name, f["value"]) if f["kind"] == "numeric" else f"score {f['score']:.2f}"
            lines.append(f"  {name}: {value}")
    return "\n".join(lines) + "\n"
