"""EchoPrime's released candidate bank, imported once into a memory-mapped medvid folder.

EchoPrime (echonet/EchoPrime) ships the studies it retrieves report sections from as
``model_data/candidates_data/{candidate_embeddings_p1.pt, candidate_embeddings_p2.pt, candidate_studies.csv,
candidate_reports.pkl, candidate_labels.pkl}`` and ``assets/{MIL_weights.csv, all_phr.json, per_section.json,
section_to_phenotypes.pkl, roc_thresholds.csv}``; its start-up decodes every phrase-encoded report. The facts
this module follows (from the publisher's code; none of it copied):

* a report is a list of ``(section index, phrase index, value)``; the phrases of a section are the lists of
  ``all_phr.json[section]`` concatenated in file order; a new section opens with ``"[SEP] "`` (none before the
  first) and ``"<section>: "``; each phrase is followed by ``" "``, its ``<numerical>`` (else ``<string>``)
  replaced by ``str(value)``; the report ends with ``"[SEP]"`` (:func:`phrase_decode`);
* a section of a report is the first regex match of ``<section>(.*?)(?=\\[SEP\\])`` (the name used as a
  pattern as is), returned as ``<section><match>[SEP]`` (:func:`extract_section`);
* ``candidate_labels[phenotype]`` maps a candidate's ``Study`` (as ``pandas.read_csv`` parses it) to its value.

Bank layout (written atomically as a whole; opening memory-maps it and decodes nothing)::

    manifest.json       format medvid-echoprime-bank, source echoprime, candidates, dim, sections (MIL_weights
                        order), views, section_weights, phenotypes (name -> kind, section, query_section),
                        thresholds (roc_thresholds.csv), scrubber version and counts, file digests, fingerprint
    embeddings.npy      float32 [N, D], the candidates in EchoPrime's order (p1 then p2)
    has_section.npy     bool [N, S]: extract_section finds section s in candidate n
    report_offsets.npy  int64 [N + 1]; reports.bin holds the decoded, scrubbed reports as UTF-8
    labels.npy          float64 [N, P] phenotype value per candidate (NaN = no label)
    study_keys.npy      the candidates' Study ids as strings
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.io.safe_pickle import load_plain
from medvid.utils import atomic_dir, resolve_under

FORMAT = "medvid-echoprime-bank"
VERSION = 1
MANIFEST = "manifest.json"
SEP = "[SEP]"
CANDIDATES = "model_data/candidates_data"
FILES = {
    "embeddings_p1": f"{CANDIDATES}/candidate_embeddings_p1.pt",
    "embeddings_p2": f"{CANDIDATES}/candidate_embeddings_p2.pt",
    "studies": f"{CANDIDATES}/candidate_studies.csv",
    "reports": f"{CANDIDATES}/candidate_reports.pkl",
    "labels": f"{CANDIDATES}/candidate_labels.pkl",
    "mil_weights": "assets/MIL_weights.csv",
    "phrases": "assets/all_phr.json",
    "per_section": "assets/per_section.json",
    "section_to_phenotypes": "assets/section_to_phenotypes.pkl",
    "roc_thresholds": "assets/roc_thresholds.csv",
}
_REGEX_SYNTAX = re.compile(r"[.^$*+?{}\[\]\\|()]")
_ARRAYS = ("embeddings.npy", "has_section.npy", "report_offsets.npy", "reports.bin", "labels.npy", "study_keys.npy")


# --- EchoPrime's text facts ------------------------------------------------------------------
def phrase_table(all_phr: Mapping[str, Mapping[str, Sequence[str]]]) -> tuple[list[str], list[list[str]]]:
    """Section names (``all_phr.json`` order) and, per section, its phrase templates (its lists joined)."""
    names = list(all_phr)
    return names, [[p for group in all_phr[s].values() for p in group] for s in names]


def fill_phrase(template: str, value: Any) -> str:
    """A phrase template with its value: ``<numerical>`` first, else ``<string>``, by ``str(value)``."""
    if "<numerical>" in template:
        return template.replace("<numerical>", str(value))
    if "<string>" in template:
        return template.replace("<string>", str(value))
    return template


def phrase_decode(ids: Sequence[Sequence[Any]], names: Sequence[str], phrases: Sequence[Sequence[str]],
                  phrase: Callable[[int, int, Any], str] | None = None) -> str:
    """A report from its ``(section, phrase, value)`` triples, as EchoPrime decodes it. ``phrase(section,
    index, value)`` gives a filled phrase (default :func:`fill_phrase`; the importer's scrubs it too)."""
    phrase = phrase or (lambda s, p, v: fill_phrase(phrases[s][p], v))
    parts: list[str] = []
    current = -1
    for sec, idx, value in ids:
        if sec != current:
            if current != -1:
                parts.append(f"{SEP} ")
            parts.append(f"{names[sec]}: ")
            current = sec
        parts.append(phrase(sec, idx, value) + " ")
    parts.append(SEP)
    return "".join(parts)


def extract_section(report: str, section: str) -> str | None:
    """EchoPrime's section of a report: ``<section><text up to [SEP]>[SEP]``; None when it has none."""
    match = re.search(rf"{section}(.*?)(?=\[SEP\])", report)
    return f"{section}{match.group(1)}{SEP}" if match else None


def section_body(extracted: str, section: str) -> str:
    """The text of an extracted section without its name, colon and ``[SEP]`` (what drafts show)."""
    return extracted[len(section):-len(SEP)].lstrip(":").strip()


# --- import ----------------------------------------------------------------------------------
@dataclass
class _Inputs:
    """Everything read from an EchoPrime folder, sizes checked, before any work."""

    embeddings: list[Any]
    studies: list[Any]
    reports: Sequence[Sequence[Any]]
    labels: Any
    sections: list[str]
    views: list[str]
    section_weights: np.ndarray
    phrase_names: list[str]
    phrases: list[list[str]]
    phenotypes: dict[str, dict[str, str]]
    thresholds: dict[str, float]


def _paths(root: Path) -> dict[str, Path]:
    paths = {k: root / v for k, v in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if not p.is_file()]
    if missing:
        raise MedvidError(f"{root}: not an EchoPrime folder; missing {', '.join(missing)}")
    return paths


def _torch_rows(path: Path) -> Any:
    import torch

    try:
        t = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise MedvidError(f"{path}: not a readable tensor file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.is_floating_point():
        raise MedvidError(f"{path}: expected a 2-D float tensor of candidate embeddings, got "
                          f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
    return t


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise MedvidError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from exc


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedvidError(f"{path}: not readable JSON ({type(exc).__name__}: {exc})") from exc


def _read(root: Path) -> _Inputs:
    """Read and cross-check the EchoPrime folder: sizes that disagree are refused here, before any work."""
    p = _paths(root)
    mil = _csv(p["mil_weights"])
    if mil.columns[0] != "Section" or mil.shape[1] < 2:
        raise MedvidError(f"{p['mil_weights']}: expected a Section column followed by one column per view")
    names, phrases = phrase_table(_json(p["phrases"]))
    per_section = _json(p["per_section"])
    s2p = load_plain(p["section_to_phenotypes"])
    if not isinstance(s2p, Mapping) or not all(isinstance(v, (list, tuple)) for v in s2p.values()):
        raise MedvidError(f"{p['section_to_phenotypes']}: expected {{section: [phenotype, ...]}}")
    sections = [str(s) for s in mil["Section"]]
    if len(s2p) > len(sections):
        raise MedvidError(f"{p['section_to_phenotypes']}: {len(s2p)} sections, more than the {len(sections)} "
                          f"rows of {p['mil_weights'].name}")
    # EchoPrime's predict_metrics scores the phenotypes of the i-th section_to_phenotypes key with the
    # neighbours of the i-th MIL_weights section: kept as it runs (``query_section``).
    phenotypes = {str(ph): {"kind": "binary" if per_section.get(ph, {}).get("mode") == "binary" else "numeric",
                            "section": str(sec), "query_section": sections[i]}
                  for i, (sec, phs) in enumerate(s2p.items()) for ph in phs}
    roc = _csv(p["roc_thresholds"])
    if not {"feature", "threshold"} <= set(roc.columns):
        raise MedvidError(f"{p['roc_thresholds']}: expected feature and threshold columns")
    thresholds = {str(f): float(t) for f, t in zip(roc["feature"], roc["threshold"])}

    studies = _csv(p["studies"])
    if "Study" not in studies:
        raise MedvidError(f"{p['studies']}: no Study column")
    studies = studies["Study"].tolist()
    parts = [_torch_rows(p["embeddings_p1"]), _torch_rows(p["embeddings_p2"])]
    rows = sum(t.shape[0] for t in parts)
    if parts[0].shape[1] != parts[1].shape[1]:
        raise MedvidError(f"{root}: candidate embeddings p1 and p2 differ in width ({parts[0].shape[1]} vs "
                          f"{parts[1].shape[1]})")
    if rows != len(studies):
        raise MedvidError(f"{root}: {rows} candidate embeddings but {len(studies)} candidate studies; the files "
                          "do not belong together (nothing written)")
    reports = load_plain(p["reports"])
    if not isinstance(reports, (list, tuple, pd.Series, np.ndarray)) or len(reports) != rows:
        raise MedvidError(f"{p['reports']}: {len(reports) if hasattr(reports, '__len__') else 'no'} reports for "
                          f"{rows} candidates; the files do not belong together (nothing written)")
    labels = load_plain(p["labels"])
    missing = [ph for ph in phenotypes if not _has(labels, ph)]
    if missing:
        raise MedvidError(f"{p['labels']}: no labels for phenotypes {missing} that "
                          f"{p['section_to_phenotypes'].name} names (nothing written)")
    return _Inputs(parts, studies, reports, labels, sections, [str(c) for c in mil.columns[1:]],
                   mil.iloc[:, 1:].to_numpy(dtype=np.float64), names, phrases, phenotypes, thresholds)


def _has(labels: Any, name: str) -> bool:
    try:
        return name in labels
    except TypeError:
        return False


def _label_column(labels: Any, name: str, studies: Sequence[Any], where: str) -> np.ndarray:
    """``labels[name][study]`` per candidate (NaN where the study has none), as EchoPrime looks it up."""
    table = labels[name]
    table = table.to_dict() if hasattr(table, "to_dict") else table
    if not isinstance(table, Mapping):
        raise MedvidError(f"{where}: labels of {name!r} are a {type(table).__name__}, not study -> value")
    out = np.full(len(studies), np.nan)
    for i, study in enumerate(studies):
        if study in table:
            try:
                out[i] = float(table[study])
            except (TypeError, ValueError) as exc:
                raise MedvidError(f"{where}: label {name!r} of study {study!r} is not a number") from exc
    return out


def import_echoprime_bank(root: str | os.PathLike, out: str | os.PathLike, scrub: bool = True,
                          chunk: int = 65536) -> dict[str, Any]:
    """Import an EchoPrime folder ``root`` into the bank folder ``out`` (replaced only when it is such a bank).
    ``scrub``: the text goes through :func:`medvid.report.scrub.scrub_text` (:class:`_ScrubbedPhrases`).
    Returns the manifest."""
    from medvid.report.scrub import SCRUBBER_VERSION

    root, out = Path(root), Path(out)
    src = _read(root)
    n, dim = len(src.studies), int(src.embeddings[0].shape[1])
    phrase = _ScrubbedPhrases(src.phrases, scrub)
    with atomic_dir(out, is_echoprime_bank, "a medvid EchoPrime bank") as tmp:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        start = 0
        for part in src.embeddings:
            for s in range(0, part.shape[0], chunk):
                block = part[s:s + chunk].float().numpy()
                emb[start + s:start + s + len(block)] = block
            start += part.shape[0]
        emb.flush()
        del emb
        has = np.lib.format.open_memmap(tmp / "has_section.npy", mode="w+", dtype=np.bool_,
                                        shape=(n, len(src.sections)))
        offsets = np.zeros(n + 1, dtype=np.int64)
        with open(tmp / "reports.bin", "wb") as blob:
            for i, ids in enumerate(src.reports):
                try:
                    report = phrase_decode(ids, src.phrase_names, src.phrases, phrase)
                except (IndexError, TypeError, ValueError) as exc:
                    raise MedvidError(f"{root / FILES['reports']}: report {i} does not decode with "
                                      f"{FILES['phrases']} ({type(exc).__name__}: {exc})") from exc
                has[i] = [_has_section(report, s) for s in src.sections]
                data = report.encode("utf-8")
                blob.write(data)
                offsets[i + 1] = offsets[i] + len(data)
        has.flush()
        del has
        np.save(tmp / "report_offsets.npy", offsets)
        where = str(root / FILES["labels"])
        labels = np.stack([_label_column(src.labels, ph, src.studies, where) for ph in src.phenotypes], 1) \
            if src.phenotypes else np.zeros((n, 0))
        np.save(tmp / "labels.npy", labels)
        keys = [str(s) for s in src.studies]
        np.save(tmp / "study_keys.npy", np.asarray(keys, dtype=f"U{max([len(k) for k in keys] or [1])}"))
        digests = {name: _digest(tmp / name) for name in _ARRAYS}
        manifest = {"format": FORMAT, "format_version": VERSION, "source": "echoprime", "candidates": n,
                    "dim": dim, "sections": src.sections, "views": src.views,
                    "section_weights": src.section_weights.tolist(), "phenotypes": src.phenotypes,
                    "thresholds": {p: src.thresholds[p] for p in src.phenotypes if p in src.thresholds},
                    "scrub": {"applied": scrub, "scrubber_version": SCRUBBER_VERSION if scrub else None,
                              **phrase.summary()},
                    "files": digests,
                    "fingerprint": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
                    + uuid.uuid4().hex[:4],
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


class _ScrubbedPhrases:
    """Filled phrases for :func:`phrase_decode`, scrubbed: each phrase template once and each distinct value once
    (``str(value)``, as EchoPrime fills it), then the scrubbed value goes into the scrubbed template. A
    template is the publisher's vocabulary, the same for every report; the values are what varies, so the
    whole bank costs one scrub per template and per distinct value, not per report. A template whose
    placeholder the scrubber touched is scrubbed filled instead."""

    def __init__(self, phrases: Sequence[Sequence[str]], scrub: bool):
        self.phrases, self.scrub = phrases, scrub
        self.counts: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()
        self._templates: dict[tuple[int, int], str] = {}
        self._values: dict[str, str] = {}

    def _clean(self, text: str, what: str) -> str:
        from medvid.report.scrub import scrub_text

        result = scrub_text(text)
        self.counts.update(result.counts)
        self.changed[what] += result.text != text
        return result.text

    def __call__(self, sec: int, idx: int, value: Any) -> str:
        template = self.phrases[sec][idx]
        if not self.scrub:
            return fill_phrase(template, value)
        if (sec, idx) not in self._templates:
            self._templates[(sec, idx)] = self._clean(template, "templates")
        clean = self._templates[(sec, idx)]
        mark = "<numerical>" if "<numerical>" in template else "<string>" if "<string>" in template else None
        if mark is None:
            return clean
        if clean.count(mark) != template.count(mark):
            return self._clean(fill_phrase(template, value), "filled")
        text = str(value)
        if text not in self._values:
            self._values[text] = self._clean(text, "values")
        return clean.replace(mark, self._values[text])

    def summary(self) -> dict[str, Any]:
        return {"templates": len(self._templates), "values": len(self._values), "changed": dict(self.changed),
                "counts": dict(self.counts)}


def _has_section(report: str, section: str) -> bool:
    """``extract_section(report, section) is not None``, by a substring test where that is the same (a plain
    section name, a one-line report: every report ends with ``[SEP]``)."""
    if "\n" in report or _REGEX_SYNTAX.search(section):
        return extract_section(report, section) is not None
    return section in report


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:20]


def is_echoprime_bank(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds an imported EchoPrime bank (its manifest says so)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class EchoPrimeBank:
    """An imported EchoPrime bank, memory-mapped: opening reads the manifest and maps the arrays; a report is
    decoded from UTF-8 only when a draft uses it. Offers what ``medvid draft`` records of a bank
    (``fingerprint``, ``rows``, ``thresholds``, ``manifest``, ``phenotype_models``)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        if not is_echoprime_bank(self.dir):
            raise MedvidError(f"{self.dir}: not an imported EchoPrime bank (no valid {MANIFEST}); import one with "
                              "`medvid import echoprime-bank ECHOPRIME_FOLDER --out BANK`")
        self.manifest: dict[str, Any] = json.loads((self.dir / MANIFEST).read_text())
        if self.manifest.get("format_version") != VERSION:
            raise MedvidError(f"{self.dir}: EchoPrime bank format version {self.manifest.get('format_version')}, "
                              f"this medvid reads {VERSION}; import it again")
        try:
            self.embeddings = np.load(self._path("embeddings.npy"), mmap_mode="r")
            self.has_section = np.load(self._path("has_section.npy"), mmap_mode="r")
            self.offsets = np.load(self._path("report_offsets.npy"), mmap_mode="r")
            self.labels = np.load(self._path("labels.npy"), mmap_mode="r")
            self.study_keys = np.load(self._path("study_keys.npy"), mmap_mode="r")
            self._blob = np.memmap(self._path("reports.bin"), dtype=np.uint8, mode="r") \
                if self._path("reports.bin").stat().st_size else np.zeros(0, np.uint8)
        except (OSError, ValueError) as exc:
            raise MedvidError(f"{self.dir}: damaged EchoPrime bank ({type(exc).__name__}: {exc})") from exc
        n, s = self.rows, len(self.sections)
        shapes = {"embeddings.npy": (self.embeddings.shape, (n, int(self.manifest["dim"]))),
                  "has_section.npy": (self.has_section.shape, (n, s)),
                  "report_offsets.npy": (self.offsets.shape, (n + 1,)),
                  "labels.npy": (self.labels.shape, (n, len(self.phenotypes))),
                  "study_keys.npy": (self.study_keys.shape, (n,))}
        bad = [f"{k} {got} (expected {want})" for k, (got, want) in shapes.items() if tuple(got) != want]
        if bad or int(self.offsets[-1]) != len(self._blob):
            raise MedvidError(f"{self.dir}: damaged EchoPrime bank ({'; '.join(bad) or 'reports.bin size'})")

    def _path(self, name: str) -> Path:
        return resolve_under(self.dir, name)

    @property
    def rows(self) -> int:
        return int(self.manifest["candidates"])

    @property
    def sections(self) -> list[str]:
        return list(self.manifest["sections"])

    @property
    def views(self) -> list[str]:
        return list(self.manifest["views"])

    @cached_property
    def section_weights(self) -> np.ndarray:
        """``[S, V]`` MIL weights (section x view), as EchoPrime reads them."""
        return np.asarray(self.manifest["section_weights"], dtype=np.float64)

    @property
    def phenotypes(self) -> dict[str, dict[str, str]]:
        return dict(self.manifest["phenotypes"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest.get("thresholds", {}).items()}

    @property
    def phenotype_models(self) -> dict[str, Any]:
        return {}

    @property
    def fingerprint(self) -> str:
        """Identifies the import (digests of its files taken when it was written)."""
        return str(self.manifest["fingerprint"])

    def report(self, row: int) -> str:
        """The decoded (scrubbed) report of candidate ``row``."""
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self._blob[a:b]).decode("utf-8")
