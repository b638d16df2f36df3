"""Building a report bank: reports scrubbed and split into sections, each section paired with its study's
embedding (a video bank: the study's per-section embedding from :mod:`medvid.report.encode`; a text bank:
the section's own text embedding), then written with :func:`medvid.report.bank.write_bank`. Before encoding, the
builder keeps only sentences shared by several patients (:func:`medvid.report.sentences.keep_shared_sentences`).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.report.bank import STUDY_COLUMNS, SectionRows, write_bank
from medvid.report.sentences import SharedSentences

# per section: (study index, embedding [D], scrubbed text) in the order the rows were found
SectionItems = dict[str, list[tuple[int, np.ndarray, str]]]


def check_sections(sections: Sequence[str] | None) -> list[str]:
    """The report sections a bank keeps (None: EchoPrime's 15 + Postoperative Findings); unknown ones refused."""
    from medvid.vocab import ECHO_SECTIONS

    chosen = list(sections or ECHO_SECTIONS)
    unknown = sorted(set(chosen) - set(ECHO_SECTIONS))
    if unknown:
        raise MedvidError(f"unknown sections {unknown}; known: {list(ECHO_SECTIONS)}")
    return chosen


def scrub_sections(report: str, deny: list[str], sections: Sequence[str], counts: Counter) -> dict[str, str]:
    """The non-empty ``sections`` of ``report`` after scrubbing (pattern rules + ``deny`` as exact terms); what
    was scrubbed is added to ``counts``. Only scrubbed text is split, so no identifier reaches a bank row."""
    from medvid.io.reports import parse_sections
    from medvid.report.scrub import scrub_text

    result = scrub_text(report, deny=deny)
    counts.update(result.counts)
    return {s: t for s, t in parse_sections(result.text).items() if s in sections and t.strip()}


def study_deny_terms(ingest_dir: str | Path, dicom_root: str | Path, video_key: str) -> list[str]:
    """The study's own DICOM identifiers (from one of its files) as an exact-match deny list; an unreadable
    or unknown file leaves the pattern rules only (an empty list)."""
    from medvid.report.provenance import study_header
    from medvid.report.scrub import deny_terms

    try:
        ds = study_header(ingest_dir, dicom_root, video_key)
    except Exception:  # noqa: BLE001 - an unreadable header leaves the pattern rules only
        return []
    return [] if ds is None else deny_terms(ds)


def scrubbed_study_sections(reports: pd.DataFrame, first_video: Mapping[str, str], ingest_dir: str | Path,
                            dicom_root: str | Path, sections: Sequence[str], counts: Counter) -> dict[str, dict[str, str]]:
    """``{study_key: {section: scrubbed text}}`` of an ingest folder's ``reports`` (``study_key``, ``report``)
    for the studies that have videos (``first_video``: study key -> one of its video keys) and a section."""
    texts = {}
    for key, report in zip(reports["study_key"], reports["report"]):
        if key in first_video and str(report).strip():
            parsed = scrub_sections(str(report), study_deny_terms(ingest_dir, dicom_root, first_video[key]),
                                    sections, counts)
            if parsed:
                texts[key] = parsed
    return texts


def study_patients(videos: pd.DataFrame) -> dict[str, str]:
    """Study key -> patient key of an ingest's videos table (the first non-empty one; "" when none is known:
    the study is then its own patient)."""
    known = videos[videos["patient_key"].astype(str) != ""] if "patient_key" in videos else videos.iloc[:0]
    patients = dict.fromkeys(videos["study_key"], "")
    patients.update(known.groupby("study_key")["patient_key"].first().astype(str).to_dict())
    return patients


def add_study_rows(per_section: SectionItems, study: int, texts: Mapping[str, str], encoded) -> None:
    """Append one encoded study's rows: each of its report ``texts`` with the study's embedding for that section
    (:class:`medvid.report.encode.EncodedStudy`; a section the encoder does not give is left out)."""
    for s, text in texts.items():
        if s in encoded.sections:
            per_section.setdefault(s, []).append((study, encoded.embeddings[encoded.sections.index(s)].numpy(), text))


def embed_section_texts(model, items: Sequence[tuple[int, str, str]], batch: int) -> SectionItems:
    """A text bank's rows: ``items`` ``(study index, section, text)`` embedded by ``model``'s long-text encoder,
    ``batch`` texts per call."""
    import torch

    per_section: SectionItems = {}
    with torch.no_grad():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            emb = model.encode_long_text([t for _, _, t in chunk]).float().cpu().numpy()
            for (study, s, text), e in zip(chunk, emb):
                per_section.setdefault(s, []).append((study, e, text))
    return per_section


def labels_table(path: str | Path, key: str, keys: list[str]) -> pd.DataFrame:
    """``study_key`` (one row per key, in order) plus the phenotype columns of a labels CSV keyed by ``key``
    (missing file or study: no values)."""
    from medvid.io.reports import read_labels

    table = pd.DataFrame({"study_key": keys})
    if not Path(path).is_file():
        return table
    labels = read_labels(path, key=key).rename(columns={key: "study_key"})
    return table.merge(labels, on="study_key", how="left")


def bank_manifest(kind: str, model_dir: str, views_dir: str, sections: list[str], counts: Counter,
                  shared: SharedSentences, **extra: Any) -> dict[str, Any]:
    """The manifest fields a builder records: models (name, fingerprint, folder), text encoder, sections,
    scrubber version and counts, the shared-sentence rule and its counts, medvid version, plus ``extra``."""
    from medvid import __version__
    from medvid.report.provenance import folder_fingerprint, model_name, text_encoder_name
    from medvid.report.scrub import SCRUBBER_VERSION

    return {"kind": kind, "model": {"name": model_name(model_dir), "fingerprint": folder_fingerprint(model_dir),
                                    "dir": str(Path(model_dir).resolve())},
            "view_model": {"name": model_name(views_dir), "fingerprint": folder_fingerprint(views_dir),
                           "dir": str(Path(views_dir).resolve()) if views_dir else ""},
            "text_encoder": text_encoder_name(model_dir), "configured_sections": sections,
            "scrubber_version": SCRUBBER_VERSION, "scrubbed": dict(counts), "shared_sentences": shared.summary(),
            "medvid_version": __version__, **extra}


def _section_rows(per_section: SectionItems, sections: Iterable[str], dim: int) -> Iterator[tuple[str, SectionRows]]:
    """``(section, SectionRows)`` in bank order, one section in memory at a time as float16."""
    for s in sections:
        items = per_section.get(s, [])
        emb = np.stack([e for _, e, _ in items]).astype(np.float16) if items else np.zeros((0, dim), np.float16)
        yield s, SectionRows(emb, np.array([i for i, _, _ in items], dtype=np.int32), [t for _, _, t in items])


def write_section_bank(directory: str | Path, per_section: SectionItems, sections: list[str], studies: pd.DataFrame,
                       dim: int, manifest: Mapping[str, Any], ann: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the bank (:func:`medvid.report.bank.write_bank`) and return its summary (rows, studies, rows per
    section, phenotypes, scrub counts); a bank without any row is refused."""
    rows = sum(len(v) for v in per_section.values())
    if rows == 0:
        raise MedvidError("no report section to put in the bank")
    write_bank(directory, _section_rows(per_section, sections, dim), studies, dim=dim, rows=rows, manifest=manifest,
               ann=ann)
    return {"bank": str(directory), "rows": rows, "studies": len(studies),
            "rows_per_section": {s: len(per_section.get(s, [])) for s in sections},
            "phenotypes": [c for c in studies.columns if c not in STUDY_COLUMNS], "scrubbed": manifest["scrubbed"],
            "shared_sentences": manifest["shared_sentences"]}
