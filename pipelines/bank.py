"""``medvid bank build INPUT --model MODEL_DIR --out BANK`` and ``medvid bank calibrate BANK --ingest DIR``.

build (``action=build``): INPUT is an ingest folder (reports, labels and views as re-keyed by ingest;
``split`` defaults to train) — each study's reports are scrubbed (pattern rules + the study's own DICOM
identifiers as a deny list), split into sections, and every section gets the study's per-section
embedding from its videos through the learned view-informed attention (a *video* bank). INPUT may
also be a plain reports CSV (``study_uid`` or ``study_key``, ``report``; ``labels=`` a labels CSV with
the same key) for a *text* bank: sections embedded by the model's text tower.

calibrate (``action=calibrate``): drafts the phenotypes of a labelled split (default val) of an ingest
folder against the bank and stores one threshold per binary phenotype (Youden's J) in its manifest, and,
with the ingest's reports, which sections take the bank's prior text rather than their neighbours'.

The logic lives in :mod:`medvid.report` (``build``, ``calibrate``, ``encode``); this job only wires it.
"""
from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.io.ingest_folder import IngestFolder, split_rows
from medvid.report.bank import MANIFEST as BANK_MANIFEST
from medvid.report.draft import DraftSettings
from medvid.report.encode import Encoding
from medvid.runs import claim_out, record_run, run_settings
from medvid.utils import progress

log = logging.getLogger("medvid")


@dataclass
class Ann:
    kind: str = setting("none", "build: none | ivf (IVF lists of float16 vectors) | hnsw (graph): approximate "
                                "index per section (needs faiss: pip install 'medvid[ann]'); drafts then use it")
    nlist: Optional[int] = setting(None, "ivf: inverted lists per section; null = 4 sqrt(rows)")
    hnsw_m: int = setting(32, "hnsw: links per node")


@dataclass
class Config:
    action: str = setting("build", "build | calibrate (set by the command)")
    input: str = setting("", "build: ingest folder (video bank) or reports CSV (text bank); calibrate: labelled "
                             "ingest folder")
    bank: str = setting("", "bank folder (build writes it, calibrate updates its manifest)")
    model: str = setting("", "saved video model folder; calibrate: blank = the model the bank was built with")
    views: str = setting("", "saved view classifier for loops without a views.csv view (blank: uniform view "
                             "weights; calibrate: the bank's)")
    dicom_root: str = setting("", "DICOM folder the ingest came from")
    split: Optional[str] = setting(None, "null = train (build) / val (calibrate); \"\" = every study")
    labels: str = setting("", "text bank only: labels CSV keyed like the reports CSV")
    sections: Optional[list[str]] = setting(None, "report sections kept; null = EchoPrime's 15 + Postoperative "
                                                  "Findings")
    min_patients: int = setting(5, "build: keep only report sentences (numbers templated) found in the reports of at "
                                   "least this many distinct patients, so no sentence unique to one patient reaches "
                                   "another's draft (EchoPrime's phrase vocabulary rule); 1 keeps every sentence")
    method: str = setting("youden", "calibration: Youden's J (sensitivity + specificity - 1) per binary phenotype")
    phenotype_models: bool = setting(
        True, "calibrate: per phenotype choose on the split between the kNN vote (k in 5/10/20/50) and a linear "
              "head fitted on the bank's rows (ridge / logistic); false = thresholds for the drafting kNN only")
    ann: Ann = setting(help="build: optional approximate index per section", factory=Ann)
    text_batch: int = setting(64, "text bank: sections per text-encoder call")
    progress: bool = setting(True, "progress bar on stderr")
    overwrite: bool = setting(False, "build: true replaces a bank built with other settings (only a folder that is a "
                                     "medvid bank); false: such a build is refused")
    encoding: Encoding = setting(help="how loops are read and encoded (as medvid draft)", factory=Encoding)
    drafting: DraftSettings = setting(help="calibrate scores phenotypes exactly as medvid draft does",
                                      factory=DraftSettings)


def run(cfg: Config) -> dict[str, Any]:
    if cfg.action == "build":
        return build(cfg)
    if cfg.action == "calibrate":
        return calibrate(cfg)
    raise MedvidError(f"action must be build or calibrate, got {cfg.action!r}")


# --------------------------------------------------------------------------- build


# Settings that do not change the bank built (or belong to calibrate).
BUILD_BOOKKEEPING = ("action", "bank", "progress", "overwrite", "method", "phenotype_models", "drafting",
                     "encoding.device", "encoding.precision", "encoding.num_workers", "encoding.loop_batch",
                     "encoding.feature_cache", "text_batch")


def build(cfg: Config) -> dict[str, Any]:
    if not cfg.input or not cfg.bank or not cfg.model:
        raise MedvidError("bank build needs input (ingest folder or reports CSV), bank (output folder) and model")
    if cfg.ann.kind != "none":
        from medvid.report.ann import check_ann

        check_ann(cfg.ann.kind)  # before any encoding: unknown kind or faiss missing
    src = Path(cfg.input)
    if not src.is_file() and not IngestFolder(src).exists():
        raise MedvidError(f"{src}: neither an ingest folder (videos.parquet) nor a reports CSV")
    if not src.is_file() and (not cfg.dicom_root or not Path(cfg.dicom_root).is_dir()):
        raise MedvidError(f"{src} is an ingest folder: give dicom_root=<the DICOM folder it was ingested from>")
    # The bank folder is replaced as a whole: checked now, its record written once the new bank is in place.
    settings = run_settings(cfg, ignore=BUILD_BOOKKEEPING)
    claim_out(cfg.bank, "bank build", settings, overwrite=cfg.overwrite,
              own=lambda out: (out / BANK_MANIFEST).is_file(), write=False)
    summary = _build_text(cfg, src) if src.is_file() else _build_video(cfg, src, Path(cfg.dicom_root))
    record_run(cfg.bank, "bank build", settings)
    return summary


def _ann(cfg: Config) -> dict[str, Any] | None:
    return None if cfg.ann.kind == "none" else {"kind": cfg.ann.kind, "nlist": cfg.ann.nlist, "hnsw_m": cfg.ann.hnsw_m}


def _build_video(cfg: Config, ingest_dir: Path, dicom_root: Path) -> dict[str, Any]:
    from medvid.device import resolve_device
    from medvid.report.build import (add_study_rows, bank_manifest, check_sections, labels_table,
                                     scrubbed_study_sections, study_patients, write_section_bank)
    from medvid.report.encode import StageTimer, encode_studies, load_encoder, loop_clips
    from medvid.report.sentences import keep_shared_sentences

    sections = check_sections(cfg.sections)
    split = "train" if cfg.split is None else cfg.split
    reports = split_rows(IngestFolder(ingest_dir).read_reports(), split, ingest_dir)
    videos = IngestFolder(ingest_dir).read_videos()
    first_video = videos.groupby("study_key")["video_key"].first().to_dict()
    counts: Counter = Counter()
    texts = scrubbed_study_sections(reports, first_video, ingest_dir, dicom_root, sections, counts)
    if not texts:
        raise MedvidError(f"{ingest_dir}: no study of split {split!r} has both videos and a report with known sections")
    patients = study_patients(videos)
    shared = keep_shared_sentences(texts, patients, cfg.min_patients)
    texts = shared.texts
    keys = sorted(texts)
    encoder = load_encoder(cfg.model, cfg.views, resolve_device(cfg.encoding.device), cfg.encoding.precision)
    loops, cache = loop_clips(encoder, ingest_dir, dicom_root, keys, cfg.encoding)
    index = {k: i for i, k in enumerate(keys)}
    per_section: dict[str, list] = {}
    errors, used = 0, []
    for item in progress(encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                    num_workers=cfg.encoding.num_workers, timer=StageTimer(), feature_cache=cache),
                     total=len(keys), unit="study", desc="bank", enabled=cfg.progress):
        if isinstance(item, dict):
            errors += 1
            log.warning("bank: study %s skipped (%s)", item["study_key"], item["errors"][0]["reason"])
            continue
        used.append(item.study_key)
        add_study_rows(per_section, index[item.study_key], texts[item.study_key], item)
    # study indices follow ``keys``; studies that failed keep their row (no section rows point at them)
    studies = labels_table(IngestFolder(ingest_dir).labels, "study_key", keys)
    studies.insert(1, "patient_key", [patients[k] for k in keys])
    manifest = bank_manifest("video", cfg.model, cfg.views, sections, counts, shared,
                             source={"split": split, "studies_skipped": errors})
    summary = write_section_bank(cfg.bank, per_section, sections, studies, int(encoder.model.embed_dim), manifest,
                                 _ann(cfg))
    return {**summary, "studies_embedded": len(used), "studies_skipped": errors}


def _build_text(cfg: Config, path: Path) -> dict[str, Any]:
    from medvid.device import resolve_device
    from medvid.io.reports import read_reports
    from medvid.models.clip import VideoTextModel
    from medvid.report.build import (bank_manifest, check_sections, embed_section_texts, labels_table,
                                     scrub_sections, write_section_bank)
    from medvid.report.sentences import keep_shared_sentences
    from medvid.utils import pseudonym

    sections = check_sections(cfg.sections)
    head = pd.read_csv(path, nrows=0).columns
    key = "study_key" if "study_key" in head else "study_uid"
    reports = read_reports(path, key=key)
    if cfg.split:
        reports = reports[reports["split"] == cfg.split]
    salt = secrets.token_hex(16)  # real UIDs become unlinkable keys (the salt is not kept)
    rekey = (lambda k: k) if key == "study_key" else (lambda k: pseudonym(k, salt, prefix="st_"))
    counts: Counter = Counter()
    report_keys = list(reports[key])
    texts = {i: scrub_sections(str(report), [k], sections, counts)
             for i, (k, report) in enumerate(zip(report_keys, reports["report"]))}
    texts = {i: t for i, t in texts.items() if t}
    if not texts:
        raise MedvidError(f"{path}: no report with known sections")
    # each study is its own patient: a reports CSV names no patient
    shared = keep_shared_sentences(texts, dict(enumerate(report_keys)), cfg.min_patients)
    with_text = shared.with_text()
    keys = [report_keys[i] for i in with_text]
    items = [(j, s, t) for j, parsed in enumerate(with_text.values()) for s, t in parsed.items()]
    model = VideoTextModel.from_pretrained(cfg.model).to(resolve_device(cfg.encoding.device))
    per_section = embed_section_texts(model, items, cfg.text_batch)
    studies = labels_table(Path(cfg.labels), key, keys) if cfg.labels else pd.DataFrame({"study_key": keys})
    studies["study_key"] = [rekey(k) for k in keys]
    studies.insert(1, "patient_key", "")
    manifest = bank_manifest("text", cfg.model, cfg.views, sections, counts, shared, source={"split": cfg.split or ""})
    return write_section_bank(cfg.bank, per_section, sections, studies, int(model.embed_dim), manifest, _ann(cfg))


# --------------------------------------------------------------------------- calibrate


def calibrate(cfg: Config) -> dict[str, Any]:
    from medvid.device import resolve_device
    from medvid.io.reports import parse_sections, read_labels, read_reports
    from medvid.report.bank import Bank
    from medvid.report.calibrate import calibrate_phenotypes, choose_text_sources
    from medvid.report.draft import Drafter
    from medvid.report.encode import encode_studies, load_encoder, loop_clips
    from medvid.report.provenance import folder_fingerprint
    from medvid.report.retrieval import patients_of

    if cfg.method != "youden":
        raise MedvidError(f"calibration method must be youden, got {cfg.method!r}")
    if not cfg.bank or not cfg.input:
        raise MedvidError("bank calibrate needs bank and input (a labelled ingest folder)")
    bank = Bank(cfg.bank)
    model = cfg.model or bank.manifest["model"].get("dir", "")
    views = cfg.views if cfg.views else bank.manifest.get("view_model", {}).get("dir", "")
    bank = Bank.open(cfg.bank, model_fingerprint=folder_fingerprint(model))
    if not bank.phenotypes:
        raise MedvidError(f"{cfg.bank}: the bank has no phenotype to calibrate")
    ingest_dir = Path(cfg.input)
    if not IngestFolder(ingest_dir).labels.is_file():
        raise MedvidError(f"{ingest_dir}: no labels.csv (ingest with labels=...)")
    if not cfg.dicom_root or not Path(cfg.dicom_root).is_dir():
        raise MedvidError("bank calibrate needs dicom_root=<the DICOM folder the ingest came from>")
    split = "val" if cfg.split is None else cfg.split
    videos = IngestFolder(ingest_dir).read_videos()
    labels = read_labels(IngestFolder(ingest_dir).labels, key="study_key").set_index("study_key")
    keys = sorted(set(split_rows(videos, split, ingest_dir)["study_key"]) & set(labels.index))
    if not keys:
        raise MedvidError(f"{ingest_dir}: no labelled study in split {split!r}")
    encoder = load_encoder(model, views, resolve_device(cfg.encoding.device), cfg.encoding.precision)
    drafter = Drafter(bank, cfg.drafting)
    loops, cache = loop_clips(encoder, ingest_dir, Path(cfg.dicom_root), keys, cfg.encoding)
    studies = [s for s in encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                         num_workers=cfg.encoding.num_workers, feature_cache=cache)
               if not isinstance(s, dict)]
    if not studies:
        raise MedvidError(f"{ingest_dir}: no study of split {split!r} could be encoded")
    targets = {p: np.array([float(labels.at[st.study_key, p]) if p in labels.columns else np.nan for st in studies])
               for p in bank.phenotypes}
    thresholds, info, models, heads = calibrate_phenotypes(bank, drafter.pheno_section, studies, targets,
                                                           cfg.drafting, cfg.phenotype_models, patients_of(videos))
    for p, entry in info.items():
        if "threshold_skipped" in entry:
            log.warning("calibrate: %s in split %r: %s; threshold left as is", p, split, entry["threshold_skipped"])
    calibration = {"method": cfg.method, "split": split, "studies": len(studies), "phenotypes": info}
    bank.set_thresholds(thresholds, calibration, models if cfg.phenotype_models else None, heads)
    reports_csv = IngestFolder(ingest_dir).reports
    if reports_csv.is_file():  # with the calls just calibrated: which sections take the bank's prior text
        reports = read_reports(reports_csv, key="study_key").set_index("study_key")
        truth = {st.study_key: parse_sections(str(reports.at[st.study_key, "report"])) for st in studies
                 if st.study_key in reports.index}
        calibration["sections"] = choose_text_sources(bank, studies, truth, cfg.drafting, patients_of(videos))
        bank.set_thresholds(thresholds, calibration, models if cfg.phenotype_models else None, heads)
    else:
        log.warning("calibrate: %s has no reports.csv: every section keeps its neighbours' text", ingest_dir)
    prior = sorted(s for s, c in calibration.get("sections", {}).items() if c["text_source"] == "prior")
    return {"bank": cfg.bank, "split": split, "studies": len(studies), "thresholds": thresholds, "phenotypes": info,
            "prior_text_sections": prior}
