"""Report bank: scrubbed section texts with their embeddings, memory-mapped, keyed by section name.

Layout of a bank folder (written atomically as a whole, by :func:`write_bank`)::

    manifest.json     format, kind (video | text), model fingerprint, text encoder, sections with their
                      row slices, row count, dim, phenotypes (name -> numeric | binary), thresholds,
                      scrubber version, scrub counts, the shared-sentence rule (``shared_sentences``:
                      min_patients and counts, see :mod:`medvid.report.sentences`), build fingerprint
    embeddings.npy    float16 [R, D], rows grouped by section: section s is rows slices[s] = [start, stop)
    row_study.npy     int32 [R]      study index of each row
    rows.parquet      section, text  (row order; read lazily, one row group at a time)
    studies.parquet   study_key, patient_key ("" = the study is its own patient; absent in older banks)
                      + one column per phenotype (row = study index)
    study_keys.npy    the study keys as fixed-width strings (memory-mapped)
    labels.npy        float32 [n_studies, P] phenotype values (NaN = unknown), for kNN
    ann/NNN.faiss     optional approximate index per section (faiss; manifest ``ann``), only when built
                      with ``ann=`` (see :mod:`medvid.report.ann`)
    heads-<hash>.npz  linear phenotype heads (manifest ``heads``), written by calibration

Every file a bank loads, a name its manifest gives included, must resolve inside the bank folder (no absolute
path, ``..`` or symlink out): a bank that names another file is refused when opened. :attr:`Bank.fingerprint`,
what drafts record, hashes the contents of all of them, so any changed file changes it.

Opening reads the manifest and memory-maps the arrays: start-up does not depend on the bank size,
and a row's text is read only when a draft uses it. A bank remembers the model that embedded it;
opening it for another model is refused (:meth:`Bank.open` with ``model_fingerprint``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from medvid.errors import MedvidError, PathRefused
from medvid.report.ann import AnnIndex, build_ann, check_ann, save_ann
from medvid.report.retrieval import SearchOptions
from medvid.utils import atomic_dir, atomic_path, atomic_write_text, resolve_under

BANK_FORMAT = "medvid-bank"
BANK_VERSION = 1
MANIFEST = "manifest.json"
ROW_GROUP = 8192
STUDY_COLUMNS = ("study_key", "patient_key")  # the studies table's columns that are not phenotypes
_FIXED_FILES = (MANIFEST, "embeddings.npy", "row_study.npy", "rows.parquet", "studies.parquet", "study_keys.npy",
                "labels.npy")


def _hash_file(h: Any, path: Path) -> None:
    """Feed ``path``'s bytes to the hash ``h``, 4 MiB at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Hash of a saved model's weights and its learned section x view table (files, not the loaded model)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for name in ("model.safetensors", "view_attention.safetensors", "view_attention/model.safetensors"):
        path = model_dir / name
        if path.is_file():
            h.update(name.encode())
            _hash_file(h, path)
        elif name == "model.safetensors":
            raise MedvidError(f"{model_dir}: not a saved model folder (no {name})")
    return h.hexdigest()[:16]


@dataclass
class SectionRows:
    """The rows of one section: embeddings ``[n, D]``, study index per row, scrubbed texts."""

    embeddings: np.ndarray
    study: np.ndarray
    texts: list[str]


def write_bank(directory: str | os.PathLike, sections: Mapping[str, SectionRows] | Iterable[tuple[str, SectionRows]],
               studies: pd.DataFrame, *, dim: int, rows: int, manifest: Mapping[str, Any],
               ann: Mapping[str, Any] | None = None) -> Path:
    """Write a bank folder atomically. ``sections`` yields ``(name, SectionRows)`` in bank order (a
    generator keeps memory at one section); ``rows`` is their total; ``studies`` has ``study_key``, optionally
    ``patient_key``, plus one column per phenotype. ``ann`` (``kind`` ivf | hnsw, optional ``nlist``, ``hnsw_m``) also builds an
    approximate faiss index per section. Refuses to replace a folder that is not a bank."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    with atomic_dir(directory, _is_bank, "a medvid report bank") as tmp:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float16, shape=(rows, dim))
        row_study = np.lib.format.open_memmap(tmp / "row_study.npy", mode="w+", dtype=np.int32, shape=(rows,))
        schema = pa.schema([("section", pa.string()), ("text", pa.string())])
        digest = hashlib.sha256()
        slices: dict[str, list[int]] = {}
        start = 0
        pending_sections: list[str] = []
        pending_texts: list[str] = []
        with pq.ParquetWriter(tmp / "rows.parquet", schema) as writer:
            def flush(n: int) -> None:  # one row group of n rows
                writer.write_table(pa.table({"section": pending_sections[:n], "text": pending_texts[:n]},
                                            schema=schema))
                del pending_sections[:n], pending_texts[:n]

            items = sections.items() if isinstance(sections, Mapping) else sections
            for name, part in items:
                n = len(part.texts)
                if name in slices:
                    raise MedvidError(f"section {name!r} given twice")
                if part.embeddings.shape != (n, dim) or len(part.study) != n:
                    raise ValueError(f"section {name!r}: {part.embeddings.shape} embeddings, {len(part.study)} study "
                                     f"indices for {n} texts (dim {dim})")
                if start + n > rows:
                    raise ValueError(f"more than rows={rows} rows given")
                emb[start:start + n] = part.embeddings
                row_study[start:start + n] = part.study
                pending_sections += [name] * n
                pending_texts += list(part.texts)
                while len(pending_texts) >= ROW_GROUP:
                    flush(ROW_GROUP)
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(part.embeddings, dtype=np.float16).tobytes())
                slices[name] = [start, start + n]
                start += n
            if pending_texts:
                flush(len(pending_texts))
        if start != rows:
            raise ValueError(f"{start} rows given, rows={rows} announced")
        emb.flush()
        row_study.flush()
        ann_manifest = _write_ann(tmp, emb, slices, ann) if ann else None
        del emb, row_study
        phen = [c for c in studies.columns if c not in STUDY_COLUMNS]
        labels = studies[phen].to_numpy(dtype=np.float32) if phen else np.zeros((len(studies), 0), np.float32)
        np.save(tmp / "labels.npy", labels)
        keys = studies["study_key"].astype(str).to_numpy()
        np.save(tmp / "study_keys.npy", keys.astype(f"U{max([len(k) for k in keys] or [1])}"))
        studies.to_parquet(tmp / "studies.parquet", index=False)
        kinds = {c: ("binary" if set(np.unique(labels[:, j][~np.isnan(labels[:, j])])) <= {0.0, 1.0} else "numeric")
                 for j, c in enumerate(phen)}
        full = {"format": BANK_FORMAT, "format_version": BANK_VERSION, **manifest,
                "sections": list(slices), "slices": slices, "rows": rows, "dim": dim, "studies": len(studies),
                "phenotypes": kinds, "thresholds": dict(manifest.get("thresholds") or {}),
                "fingerprint": digest.hexdigest()[:16] + uuid.uuid4().hex[:4],
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if ann_manifest:
            full["ann"] = ann_manifest
        (tmp / MANIFEST).write_text(json.dumps(full, indent=1), encoding="utf-8")
    return directory


def _write_ann(tmp: Path, emb: np.ndarray, slices: Mapping[str, list[int]], ann: Mapping[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in ann.items() if k != "kind" and v is not None}
    (tmp / "ann").mkdir()
    files = {}
    for j, (name, (start, stop)) in enumerate(slices.items()):
        if stop > start:
            files[name] = f"ann/{j:03d}.faiss"
            save_ann(build_ann(emb[start:stop], ann["kind"], **params), tmp / files[name])
    return {"kind": ann["kind"], "params": params, "files": files}


def _is_bank(directory: Path) -> bool:
    try:
        return json.loads((directory / MANIFEST).read_text()).get("format") == BANK_FORMAT
    except (OSError, ValueError):
        return False


class Bank:
    """A report bank opened lazily: ``embeddings`` and ``row_study`` are memory maps. ``search`` sets how
    :func:`medvid.report.retrieval.search` scores it (default: the approximate index when the bank was
    built with one, else the exact scan)."""

    def __init__(self, directory: str | os.PathLike, search: SearchOptions | None = None):
        self.dir = Path(directory)
        if not _is_bank(self.dir):
            raise MedvidError(f"{self.dir}: not a medvid report bank (no valid {MANIFEST}); "
                              "build one with `medvid bank build`")
        self.manifest: dict[str, Any] = json.loads(self.path(MANIFEST).read_text())
        if self.manifest.get("format_version") != BANK_VERSION:
            raise MedvidError(f"{self.dir}: bank format version {self.manifest.get('format_version')}, "
                              f"this medvid reads {BANK_VERSION}; rebuild the bank")
        for name in self.files():  # every name the manifest gives must stay inside the bank, checked up front
            self.path(name)
        try:
            self.embeddings = np.load(self.path("embeddings.npy"), mmap_mode="r")
            self.row_study = np.load(self.path("row_study.npy"), mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise MedvidError(f"{self.dir}: damaged bank ({type(exc).__name__}: {exc})") from exc
        if self.embeddings.shape != (self.rows, self.dim):
            raise MedvidError(f"{self.dir}: embeddings {self.embeddings.shape} disagree with the manifest "
                              f"({self.rows} x {self.dim})")
        self._groups: OrderedDict[int, list[str]] = OrderedDict()
        self._ann: dict[str, Any] = {}
        self.search_cache: dict[str, Any] = {}  # per-section working copies kept by retrieval (bfloat16)
        self.search_options = search or SearchOptions(index="ann" if self.manifest.get("ann") else "exact")

    @classmethod
    def open(cls, directory: str | os.PathLike, model_fingerprint: str | None = None,
             search: SearchOptions | None = None) -> Bank:
        """Open a bank for searching; with ``model_fingerprint``, refuse one embedded by another model. A bank
        searched through its approximate index needs faiss: refused here, before any work, when missing."""
        bank = cls(directory, search)
        if bank.search_options.index == "ann":
            if not bank.manifest.get("ann"):
                raise MedvidError(f"{bank.dir}: the bank has no approximate index; rebuild it with "
                                  "`medvid bank build ... ann.kind=ivf` (or search it exactly)")
            check_ann(bank.manifest["ann"]["kind"])
        built = bank.manifest.get("model", {}).get("fingerprint")
        if model_fingerprint is not None and built != model_fingerprint:
            raise MedvidError(f"{bank.dir}: bank was built with model {built} "
                              f"({bank.manifest.get('model', {}).get('name', '?')}), not with the given model "
                              f"{model_fingerprint}; its embeddings are not comparable. Rebuild it with "
                              "`medvid bank build ... --model` this model")
        return bank

    # --- files ------------------------------------------------------------------------------
    def files(self) -> list[str]:
        """The names (relative to the bank folder) of every file the bank loads, its manifest's ones included."""
        ann = self.manifest.get("ann") or {}
        heads = [self.manifest["heads"]] if self.manifest.get("heads") else []
        return [*_FIXED_FILES, *heads, *(ann.get("files") or {}).values()]

    def path(self, name: str) -> Path:
        """The bank file ``name``, refused (``MedvidError``) unless it resolves inside the bank folder."""
        try:
            return resolve_under(self.dir, str(name))
        except PathRefused as exc:
            raise MedvidError(f"{self.dir}: bank file {str(name)!r} refused ({exc}); a bank loads only files "
                              "inside its own folder") from exc

    @cached_property
    def fingerprint(self) -> str:
        """What drafts record to identify the bank: a hash of the contents of every file it loads (:meth:`files`),
        so a changed manifest, array, text, heads or index file changes it."""
        h = hashlib.sha256()
        try:
            for name in self.files():
                h.update(name.encode() + b"\0")
                _hash_file(h, self.path(name))
        except OSError as exc:
            raise MedvidError(f"{self.dir}: damaged bank ({type(exc).__name__}: {exc})") from exc
        return h.hexdigest()[:20]

    # --- manifest ---------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def sections(self) -> list[str]:
        """Sections that have at least one row, in bank order."""
        return [s for s in self.manifest["sections"] if self.section_slice(s)[1] > self.section_slice(s)[0]]

    @property
    def phenotypes(self) -> dict[str, str]:
        return dict(self.manifest.get("phenotypes") or {})

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.manifest.get("thresholds") or {}).items()}

    def section_slice(self, section: str) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``section`` (empty when the bank has none)."""
        start, stop = self.manifest["slices"].get(section, (0, 0))
        return int(start), int(stop)

    def ann_index(self, section: str) -> AnnIndex:
        """The approximate index of ``section`` (:class:`medvid.report.ann.AnnIndex`, opened once)."""
        ann = self.manifest.get("ann") or {}
        if section not in ann.get("files", {}):
            raise MedvidError(f"{self.dir}: the bank has no approximate index for {section!r}; rebuild it with "
                              "`medvid bank build ... ann.kind=ivf` (or search it exactly)")
        if section not in self._ann:
            self._ann[section] = AnnIndex(self.path(ann["files"][section]), ann["kind"])
        return self._ann[section]

    # --- lazy tables ------------------------------------------------------------------------
    @cached_property
    def labels(self) -> np.ndarray:
        """``[n_studies, P]`` phenotype values, columns in ``phenotypes`` order (memory-mapped)."""
        return np.load(self.path("labels.npy"), mmap_mode="r")

    @cached_property
    def study_keys(self) -> np.ndarray:
        """Study key per study index (memory-mapped fixed-width strings)."""
        return np.load(self.path("study_keys.npy"), mmap_mode="r")

    @cached_property
    def studies(self) -> pd.DataFrame:
        """The studies table: ``study_key``, ``patient_key`` ("" = the study is its own patient; blank for every
        study of a bank built before patients were recorded) and the phenotype columns (row = study index)."""
        studies = pd.read_parquet(self.path("studies.parquet"))
        if "patient_key" not in studies:
            studies.insert(1, "patient_key", "")
        return studies

    @cached_property
    def _rows_file(self):
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path("rows.parquet"))

    @cached_property
    def _group_starts(self) -> np.ndarray:
        meta = self._rows_file.metadata
        return np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])

    def texts(self, rows: Sequence[int], cache_groups: int = 64) -> list[str]:
        """Section texts of bank ``rows``; reads only the row groups that hold them (a small LRU)."""
        out = []
        for r in rows:
            group = int(np.searchsorted(self._group_starts, int(r), side="right")) - 1
            offset = int(r) - int(self._group_starts[group])
            if group not in self._groups:
                self._groups[group] = self._rows_file.read_row_group(group, columns=["text"]).column(0).to_pylist()
                if len(self._groups) > cache_groups:
                    self._groups.popitem(last=False)
            self._groups.move_to_end(group)
            out.append(self._groups[group][offset])
        return out

    @property
    def phenotype_models(self) -> dict[str, dict[str, Any]]:
        """Per phenotype, the model ``bank calibrate`` chose (``{"method": "knn", "k": ...}`` or
        ``{"method": "linear", ...}``); empty before calibration."""
        return dict(self.manifest.get("phenotype_models") or {})

    @cached_property
    def heads(self) -> dict[str, tuple[np.ndarray, float]]:
        """Linear phenotype heads ``{phenotype: (w [D], b)}`` (``heads-*.npz``, written by calibration)."""
        name = self.manifest.get("heads")
        if not name:
            return {}
        with np.load(self.path(name)) as z:
            return {p: (z[f"{p}.w"], float(z[f"{p}.b"])) for p in {k.rsplit(".", 1)[0] for k in z.files}}

    def set_thresholds(self, thresholds: Mapping[str, float], calibration: Mapping[str, Any],
                       models: Mapping[str, Mapping[str, Any]] | None = None,
                       heads: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Store calibrated thresholds (and, when given, the per-phenotype models with the weights of
        their linear heads) in the bank, atomically: a new ``heads-<hash>.npz`` first, then the manifest."""
        unknown = (set(thresholds) | set(models or {})) - set(self.phenotypes)
        if unknown:
            raise MedvidError(f"thresholds or models for phenotypes the bank does not have: {sorted(unknown)}")
        self.manifest["thresholds"] = {**self.thresholds, **{k: float(v) for k, v in thresholds.items()}}
        self.manifest["calibration"] = dict(calibration)
        old_heads = self.manifest.get("heads")
        if models is not None:
            arrays = {}
            for p, h in (heads or {}).items():
                arrays[f"{p}.w"] = np.asarray(h["w"], dtype=np.float64)
                arrays[f"{p}.b"] = np.asarray(float(h["b"]))
            self.manifest["phenotype_models"] = {p: dict(m) for p, m in models.items()}
            self.manifest["heads"] = None
            if arrays:
                digest = hashlib.sha256(b"".join(arrays[k].tobytes() for k in sorted(arrays))).hexdigest()[:12]
                self.manifest["heads"] = f"heads-{digest}.npz"
                with atomic_path(self.dir / self.manifest["heads"]) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **arrays)
        atomic_write_text(self.dir / MANIFEST, json.dumps(self.manifest, indent=1))
        self.__dict__.pop("heads", None)
        self.__dict__.pop("fingerprint", None)
        ours = old_heads and re.fullmatch(r"heads-[0-9a-f]{12}\.npz", old_heads)  # only a name this method writes
        if ours and old_heads != self.manifest.get("heads"):
            (self.dir / old_heads).unlink(missing_ok=True)
