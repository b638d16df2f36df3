"""``medvid draft INPUT --model MODEL_DIR --views VIEW_MODEL_DIR --bank BANK --out OUT``: batch report drafting.

INPUT is an ingest folder (``videos.parquet``; give ``dicom_root``) or a DICOM folder, ingested on the
fly into ``OUT/ingest``. Outputs follow ``docs/drafting_contract.md``: ``OUT/drafts.jsonl``,
``OUT/drafts/<study_key>.txt`` and ``.sr.dcm``, ``OUT/errors.jsonl``.

Batch behaviour: ``shard=K/N`` (1-based; under ``torchrun`` RANK/WORLD_SIZE) drafts every N-th study;
a finished study leaves ``OUT/.draft_state/done/<study_key>.json`` (written last, atomically) and is
skipped on a re-run, so a killed run resumes without duplicates; ``drafts.jsonl`` and ``errors.jsonl``
are assembled from those records at the end. A re-run with different settings is refused, naming
the settings that differ. One unreadable study becomes an ``errors.jsonl`` line; the batch goes on.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

from medvid.errors import MedvidError
from medvid.report.draft import DraftSettings, StageTimer, render_text
from medvid.utils import atomic_write_text, resolve_under, write_jsonl

log = logging.getLogger("medvid")

STATE = ".draft_state"


@dataclass
class Encoding:
    """How loops are read and encoded (shared by ``medvid bank build`` and ``medvid draft``)."""

    n_frames: Optional[int] = None      # null = the model's recorded num_frames
    frame_stride: Optional[int] = None  # native-frame stride; with target_fps null both = the model's recorded
    target_fps: Optional[float] = None  # sampling (fps or frame_stride), else every 2nd frame (EchoPrime)
    mask: Optional[str] = None          # sector masking fan | box | pixels | none; null = the model's recorded mask, else fan
    short_clip: Optional[str] = None    # loop shorter than the clip: wrap | zero_pad_after_norm; null = the model's (EchoPrime: zero pad)
    max_videos: Optional[int] = None    # loops per study (null = all)
    loop_batch: int = 16                # loops per backbone call
    num_workers: int = 1                # DataLoader workers decoding ahead of the model
    device: str = "auto"                # auto | cpu | cuda
    precision: str = "auto"             # frame backbone: auto (bf16 where the CPU/GPU has native bf16) | fp32 | bf16
    feature_cache: Optional[str] = None  # frozen-backbone frame-feature cache to reuse (e.g. pretrain OUT/cache/echo)


@dataclass
class Drafting:
    neighbours: int = 5
    consensus: int = 1
    knn_k: int = 50
    knn_temperature: Optional[float] = 0.1
    phenotype_sections: dict[str, str] = field(default_factory=dict)
    default_section: str = "Left Ventricle"


@dataclass
class Config:
    input: str = ""                     # ingest folder or DICOM folder
    model: str = ""                     # saved video model folder: medvid pretrain OUT/model, or medvid import echoprime
    views: str = ""                     # saved view classifier folder (train-views, import echoprime-view); "" = known views only
    bank: str = ""                      # report bank folder (medvid bank build)
    out: str = "drafts_out"
    dicom_root: str = ""                # DICOM root of an ingest-folder INPUT
    split: str = ""                     # draft only this split of an ingest folder ("" = all studies)
    shard: str = ""                     # K/N (1-based); "" = torchrun RANK/WORLD_SIZE, else 1/1
    batch_studies: int = 16             # studies per bank scan
    findings: Optional[str] = None      # prompt YAML for zero-shot findings (null = off)
    keep_identifiers: bool = False      # SR references the real StudyInstanceUID (else a pseudonymous UID)
    write_sr: bool = True
    progress: bool = True
    encoding: Encoding = field(default_factory=Encoding)
    drafting: Drafting = field(default_factory=Drafting)


def parse_shard(shard: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N; blank -> torchrun's RANK/WORLD_SIZE (+1), else (1, 1)."""
    if not shard:
        return int(os.environ.get("RANK", "0")) + 1, int(os.environ.get("WORLD_SIZE", "1"))
    try:
        k, n = (int(x) for x in str(shard).split("/"))
    except ValueError as exc:
        raise MedvidError(f"shard must look like K/N (e.g. 2/4), got {shard!r}") from exc
    if not 1 <= k <= n:
        raise MedvidError(f"shard {shard!r}: need 1 <= K <= N")
    return k, n


def shard_of(keys: list[str], k: int, n: int) -> list[str]:
    """Every N-th of the sorted keys, starting at the K-th: N shards partition the keys."""
    return [key for i, key in enumerate(sorted(keys)) if i % n == k - 1]


def resolve_device(device: str) -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK`` under torchrun) when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def load_encoder(model_dir: str, views_dir: str, device: torch.device, precision: str = "auto"):
    """``StudyEncoder`` from saved folders: a video model of any kind with a clip embedding (``medvid pretrain``'s,
    an imported EchoPrime) + its section x view attention (the shipped prior when the folder has none, as
    EchoPrime's static table) + an optional view classifier."""
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.models.checkpoint import load_pretrained
    from medvid.report.draft import StudyEncoder, embedding_path

    model = load_pretrained(model_dir)
    try:
        embedding_path(model)
    except MedvidError as exc:
        raise MedvidError(f"{model_dir}: {exc}") from exc
    view_model = load_pretrained(views_dir) if views_dir else None
    if view_model is not None and not hasattr(view_model, "labels"):
        raise MedvidError(f"{views_dir}: a '{type(view_model).checkpoint_kind}' model is not a view classifier "
                          "(train one with medvid train-views, or import echoprime-view)")
    return StudyEncoder(model, ViewInformedAttention.from_pretrained(model_dir), view_model, device, precision)


def loop_clips(encoder, ingest_dir: str | Path, dicom_root: str | Path, studies: list[str], enc: Encoding):
    """``(LoopClips, feature cache or None)`` of ``studies`` for ``encoder`` (a second clip per loop only when
    the view classifier cannot share the video backbone; loops in the feature cache are not decoded)."""
    from medvid.report.draft import LoopClips, open_feature_cache
    from medvid.transforms.contract import Sampling

    s = Sampling.recorded(encoder.model.pretrained_cfg, enc.n_frames, enc.target_fps, enc.frame_stride, enc.mask,
                          enc.short_clip)
    cache = None
    if enc.feature_cache:
        if encoder.path != "frames":
            raise MedvidError("encoding.feature_cache holds frame features; this model embeds whole clips: drop it")
        cache = open_feature_cache(enc.feature_cache, encoder, s.num_frames, s.frame_stride,
                                   s.fps, s.mask, s.motion)
    loops = LoopClips(ingest_dir, dicom_root, studies, encoder.model, s,
                      encoder.view_model if encoder.needs_view_clips else None, enc.max_videos,
                      cached=cache.index if cache else ())
    return loops, cache


def folder_fingerprint(path: str) -> str:
    from medvid.report.bank import model_fingerprint

    return model_fingerprint(path) if path else ""


def _model_name(path: str) -> str:
    from medvid.models.hub import read_config

    return str(read_config(path)["config"].get("name") or Path(path).name) if path else ""


def _plain(section: Any) -> dict[str, Any]:
    """A config section (dataclass or OmegaConf node) as a plain dict."""
    from omegaconf import OmegaConf

    return asdict(section) if is_dataclass(section) else OmegaConf.to_container(section, resolve=True)


def _validate(cfg: Config) -> None:
    for name in ("input", "model", "bank"):
        if not getattr(cfg, name):
            raise MedvidError(f"draft needs {name}=...")
    if not Path(cfg.input).is_dir():
        raise MedvidError(f"input is not a folder: {cfg.input}")
    if cfg.batch_studies < 1 or cfg.drafting.knn_k < 1 or cfg.drafting.neighbours < 1 or cfg.drafting.consensus < 1:
        raise MedvidError("batch_studies, drafting.knn_k, drafting.neighbours and drafting.consensus must be >= 1")
    if cfg.findings and not Path(cfg.findings).is_file():
        raise MedvidError(f"findings prompt file not found: {cfg.findings}")


def _ingest_input(cfg: Config, out: Path) -> tuple[Path, Path]:
    """(ingest folder, DICOM root) of the input; a DICOM folder is ingested into OUT/ingest."""
    src = Path(cfg.input)
    if (src / "videos.parquet").is_file():
        if not cfg.dicom_root or not Path(cfg.dicom_root).is_dir():
            raise MedvidError(f"{src} is an ingest folder: give dicom_root=<the DICOM folder it was ingested from>")
        return src, Path(cfg.dicom_root)
    from medvid.config import load_config
    from medvid.pipelines import ingest

    ingest.run(load_config(ingest.Config, "ingest", None,
                           [f"dicom_root={src}", f"out={out / 'ingest'}", f"progress={cfg.progress}"]))
    return out / "ingest", src


def _check_settings(state: Path, settings: dict[str, Any]) -> None:
    path = state / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise MedvidError(f"{state.parent} holds drafts made with other settings ({', '.join(diff)}); "
                              "use a new output folder, or the same settings to resume")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True))


def _study_uid(ingest_dir: Path, dicom_root: Path, video_key: str) -> str | None:
    """The real StudyInstanceUID, read from one of the study's files (keep_identifiers only)."""
    import pydicom

    from medvid.io.dicom import video_paths

    rel = video_paths(ingest_dir).get(video_key)
    if rel is None:
        return None
    ds = pydicom.dcmread(resolve_under(dicom_root, rel), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    return str(ds.get("StudyInstanceUID") or "") or None


def run(cfg: Config) -> dict[str, Any]:
    from medvid import __version__
    from medvid.report.bank import Bank
    from medvid.report.draft import Drafter, encode_studies

    _validate(cfg)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module per SR
    out = Path(cfg.out)
    k, n = parse_shard(cfg.shard)
    model_fp = folder_fingerprint(cfg.model)
    bank = Bank.open(cfg.bank, model_fingerprint=model_fp)
    provenance = {"model": {"name": _model_name(cfg.model), "fingerprint": model_fp},
                  "view_model": {"name": _model_name(cfg.views), "fingerprint": folder_fingerprint(cfg.views)},
                  "bank": {"fingerprint": bank.fingerprint, "rows": bank.rows}, "medvid_version": __version__}
    settings = {"input": str(Path(cfg.input).resolve()), "split": cfg.split, "model": model_fp,
                "view_model": provenance["view_model"]["fingerprint"], "bank": bank.fingerprint,
                "thresholds": bank.thresholds, "phenotype_heads": bank.manifest.get("heads") or "",
                "phenotype_models": {p: {k_: v for k_, v in m.items() if k_ != "validation"}
                                     for p, m in bank.phenotype_models.items()},
                "findings": cfg.findings or "", "keep_identifiers": cfg.keep_identifiers,
                "write_sr": cfg.write_sr, **{f"encoding.{k_}": v for k_, v in _plain(cfg.encoding).items()
                                             if k_ in ("n_frames", "frame_stride", "target_fps", "mask", "max_videos")},
                **{f"drafting.{k_}": v for k_, v in _plain(cfg.drafting).items()}}
    state = out / STATE
    (state / "done").mkdir(parents=True, exist_ok=True)
    (state / "errors").mkdir(parents=True, exist_ok=True)
    _check_settings(state, json.loads(json.dumps(settings)))

    ingest_dir, dicom_root = _ingest_input(cfg, out)
    from medvid.datasets.echo import read_videos

    videos = read_videos(ingest_dir)
    if cfg.split:
        videos = videos[videos["split"] == cfg.split]
    keys = shard_of(sorted(set(videos["study_key"])), k, n)
    todo = [key for key in keys if not (state / "done" / f"{key}.json").is_file()]
    log.info("draft: shard %d/%d, %d studies, %d already drafted, %d to do", k, n, len(keys), len(keys) - len(todo),
             len(todo))

    timer = StageTimer()
    drafted = failed = 0
    started = time.perf_counter()
    if todo:
        device = resolve_device(cfg.encoding.device)
        encoder = load_encoder(cfg.model, cfg.views, device, cfg.encoding.precision)
        d = cfg.drafting
        drafter = Drafter(bank, DraftSettings(d.neighbours, d.consensus, d.knn_k, d.knn_temperature,
                                              dict(d.phenotype_sections), d.default_section))
        findings = _findings(cfg.findings, encoder.model) if cfg.findings else None
        loops, cache = loop_clips(encoder, ingest_dir, dicom_root, todo, cfg.encoding)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="study", desc="draft", disable=not cfg.progress)
        batch: list = []

        def flush() -> int:
            rows = drafter.draft(batch, timer)
            t0 = time.perf_counter()
            for study, row in zip(batch, rows):
                if findings is not None:
                    clf, kinds = findings
                    row["findings"] = {name: _finding(v[0], kinds[name])
                                       for name, v in clf(study.video_mean[None]).items()}
                _write_study(out, row, provenance, ingest_dir, dicom_root, cfg)
            timer.add("write", t0)
            bar.update(len(rows))
            bar.set_postfix(per_min=f"{bar.n / max(time.perf_counter() - started, 1e-9) * 60:.1f}")
            batch.clear()
            return len(rows)

        for item in encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                   num_workers=cfg.encoding.num_workers, timer=timer, feature_cache=cache):
            if isinstance(item, dict):
                atomic_write_text(state / "errors" / f"{item['study_key']}.json", json.dumps(item["errors"]))
                failed += 1
                bar.update(1)
                continue
            batch.append(item)
            if len(batch) >= cfg.batch_studies:
                drafted += flush()
        if batch:
            drafted += flush()
        bar.close()
    elapsed = time.perf_counter() - started
    total, errors = _assemble(out)
    summary = {"out": str(out), "shard": f"{k}/{n}", "studies": len(keys), "drafted_now": drafted,
               "errors_now": failed, "drafts_total": total, "errors_total": errors,
               "seconds": round(elapsed, 1),
               "studies_per_min": round(drafted / elapsed * 60, 2) if drafted and elapsed > 0 else None,
               "stage_seconds": {s: round(v, 2) for s, v in timer.seconds.items()}, "stage_shares": timer.shares()}
    if keys and total == 0:
        raise MedvidError(f"no study could be drafted; see {out / 'errors.jsonl'}")
    return summary


def _finding(value: Any, kind: str) -> dict[str, Any]:
    v = float(value)
    return ({"kind": "numeric", "value": round(v, 2), "method": "zero_shot"} if kind == "numeric"
            else {"kind": "binary", "score": round(v, 4), "method": "zero_shot"})


def _findings(path: str, model):
    from medvid.zeroshot.classifier import FindingsClassifier
    from medvid.zeroshot.prompts import load_findings, model_text_encoder

    if not all(callable(getattr(model, m, None)) for m in ("tokenize", "encode_text")):
        raise MedvidError(f"findings={path}: a '{type(model).checkpoint_kind}' model has no text tower for zero-shot "
                          "findings; drop findings (the drafts' kNN phenotypes do not need it)")
    items = load_findings(path)
    return FindingsClassifier(items, model_text_encoder(model)), {f.name: f.kind for f in items}


def _write_study(out: Path, row: dict[str, Any], provenance: dict[str, Any], ingest_dir: Path, dicom_root: Path,
                 cfg: Config) -> None:
    """Text, SR, then the done record (last: it marks the study finished)."""
    key = row["study_key"]
    record = {"study_key": key, "status": "draft", "sections": row["sections"], "phenotypes": row["phenotypes"],
              "findings": row.get("findings", {}), "videos": row["videos"],
              "provenance": {**provenance, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
              "text_path": f"drafts/{key}.txt", "sr_path": f"drafts/{key}.sr.dcm" if cfg.write_sr else None}
    atomic_write_text(out / record["text_path"], render_text(record))
    if cfg.write_sr:
        from medvid.report.sr import write_report_sr

        uid = _study_uid(ingest_dir, dicom_root, row["videos"][0]["video_key"]) if cfg.keep_identifiers else None
        measurements = {name: p["value"] for name, p in row["phenotypes"].items() if p["kind"] == "numeric"}
        write_report_sr(out / record["sr_path"], {s: v["text"] for s, v in row["sections"].items()}, measurements,
                        study_key=key, study_instance_uid=uid, final=False)
    atomic_write_text(out / STATE / "done" / f"{key}.json", json.dumps(record))
    (out / STATE / "errors" / f"{key}.json").unlink(missing_ok=True)


def _assemble(out: Path) -> tuple[int, int]:
    """``drafts.jsonl`` / ``errors.jsonl`` from the per-study records (sorted by study key, atomic). Shards
    assemble one at a time (a lock), so the last to finish writes the complete set."""
    import fcntl

    with open(out / STATE / "assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _assemble_locked(out)


def _assemble_locked(out: Path) -> tuple[int, int]:
    done = sorted((out / STATE / "done").glob("*.json"))
    n = write_jsonl(out / "drafts.jsonl", (json.loads(p.read_text()) for p in done))
    finished = {p.stem for p in done}
    errors = [e for p in sorted((out / STATE / "errors").glob("*.json")) if p.stem not in finished
              for e in json.loads(p.read_text())]
    write_jsonl(out / "errors.jsonl", errors)
    return n, len(errors)

