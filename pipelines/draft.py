"""``medvid draft INPUT --model MODEL_DIR --views VIEW_MODEL_DIR --bank BANK --out OUT``: batch report drafting.

INPUT is an ingest folder (``videos.parquet``; give ``dicom_root``) or a DICOM folder, ingested on the
fly into ``OUT/ingest``. Outputs follow ``docs/drafting_contract.md``: ``OUT/drafts.jsonl``,
``OUT/drafts/<study_key>.txt`` and ``.sr.dcm``, ``OUT/errors.jsonl``.

Batch behaviour: ``shard=K/N`` (1-based; under ``torchrun`` RANK/WORLD_SIZE) drafts every N-th study;
a finished study is skipped on a re-run, so a killed run resumes without duplicates, and a re-run with
different settings is refused (:class:`medvid.report.drafts_folder.DraftsFolder`). Each study's
``drafts.jsonl`` line is appended as it finishes; Ctrl-C says what was kept and how to resume (exit 130).
An unreadable loop is left out of its study's draft (named in its ``left_out``); a study with no readable
loop becomes ``errors.jsonl`` lines; the batch goes on. Encoding: :mod:`medvid.report.encode`; drafting:
:mod:`medvid.report.draft`; this job only wires them.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.ingest import ingested
from medvid.io.ingest_folder import IngestFolder, split_rows
from medvid.report.draft import DraftSettings
from medvid.report.encode import Encoding, StageTimer
from medvid.utils import progress

if TYPE_CHECKING:
    from medvid.report.bank import Bank
    from medvid.report.drafts_folder import DraftsFolder

log = logging.getLogger("medvid")


@dataclass
class Config:
    input: str = setting("", "ingest folder (videos.parquet) or a DICOM folder (ingested into OUT/ingest)")
    model: str = setting("", "saved video model: medvid pretrain OUT/model (+ its view_attention/ table) or "
                             "medvid import echoprime")
    views: str = setting("", "saved view classifier (medvid train-views OUT/model, medvid import echoprime-view); "
                             "\"\" = views.csv only, else uniform")
    bank: str = setting("", "report bank (medvid bank build); must be built with the same model")
    out: str = setting("drafts_out", "output folder (drafts.jsonl, drafts/, errors.jsonl)")
    dicom_root: str = setting("", "DICOM folder an ingest-folder INPUT came from")
    split: str = setting("", "draft only this split of an ingest folder (train | val | test); \"\" or all = all "
                             "studies")
    shard: str = setting("", "K/N: every N-th study from the K-th (1-based); \"\" = torchrun RANK/WORLD_SIZE, "
                             "else 1/1")
    batch_studies: int = setting(16, "studies per bank scan (retrieval is amortised over the batch)")
    findings: Optional[str] = setting(None, "prompt YAML for zero-shot findings beside the kNN phenotypes (e.g. "
                                            "configs/prompts/echo_findings.yaml); null = off")
    keep_identifiers: bool = setting(False, "true: the SR references the real StudyInstanceUID (read from the "
                                            "DICOM files), else a pseudonymous UID")
    write_sr: bool = setting(True, "write drafts/<study_key>.sr.dcm (DICOM Comprehensive SR)")
    progress: bool = setting(True, "progress bar with studies/min on stderr")
    overwrite: bool = setting(False, "true: discard the drafts an earlier run with other settings left in OUT (only a "
                                     "folder medvid draft wrote) and draft afresh; false: such a rerun is refused")
    encoding: Encoding = setting(help="how loops are read and encoded", factory=Encoding)
    drafting: DraftSettings = setting(help="how sections and phenotypes are drawn from the bank",
                                      factory=DraftSettings)


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
    return ingested(cfg.input, cfg.dicom_root, out / "ingest", progress=cfg.progress)


def run(cfg: Config) -> dict[str, Any]:
    from medvid import __version__
    from medvid.report.bank import Bank
    from medvid.report.drafts_folder import DraftsFolder
    from medvid.report.echoprime_bank import EchoPrimeBank, is_echoprime_bank
    from medvid.report.echoprime_draft import check_models
    from medvid.report.provenance import folder_fingerprint, model_name
    from medvid.report.retrieval import patients_of

    _validate(cfg)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module per SR
    out = Path(cfg.out)
    k, n = parse_shard(cfg.shard)
    model_fp = folder_fingerprint(cfg.model)
    if is_echoprime_bank(cfg.bank):  # EchoPrime's released candidates: drafted as EchoPrime does
        check_models(cfg.model, cfg.views)
        bank = EchoPrimeBank(cfg.bank)
    else:
        bank = Bank.open(cfg.bank, model_fingerprint=model_fp)
    provenance = {"model": {"name": model_name(cfg.model), "fingerprint": model_fp},
                  "view_model": {"name": model_name(cfg.views), "fingerprint": folder_fingerprint(cfg.views)},
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
    if IngestFolder(cfg.input).exists():  # a split typo is refused before any work
        split_rows(IngestFolder(cfg.input).read_videos(), cfg.split, cfg.input)
    folder = DraftsFolder(out)
    folder.prepare(json.loads(json.dumps(settings)), overwrite=cfg.overwrite)

    ingest_dir, dicom_root = _ingest_input(cfg, out)
    videos = split_rows(IngestFolder(ingest_dir).read_videos(), cfg.split, ingest_dir)
    keys = shard_of(sorted(set(videos["study_key"])), k, n)
    todo = [key for key in keys if not folder.is_done(key)]
    log.info("draft: shard %d/%d, %d studies, %d already drafted, %d to do", k, n, len(keys), len(keys) - len(todo),
             len(todo))

    timer = StageTimer()
    drafted = failed = 0
    started = time.perf_counter()
    if todo:
        folder.assemble()  # drafts.jsonl = the finished studies (drops a line torn by a killed run); appended below
        try:
            drafted, failed = _draft_studies(cfg, folder, todo, ingest_dir, dicom_root, bank,
                                            patients_of(videos), provenance, timer)
        except KeyboardInterrupt:
            folder.assemble()
            log.warning("draft interrupted: %d of %d studies drafted (kept in %s: drafts.jsonl, drafts/, "
                        "errors.jsonl); run the same command again to resume: finished studies are skipped",
                        sum(folder.is_done(key) for key in keys), len(keys), out)
            raise
    elapsed = time.perf_counter() - started
    total, errors = folder.assemble()
    summary = {"out": str(out), "shard": f"{k}/{n}", "studies": len(keys), "drafted_now": drafted,
               "errors_now": failed, "drafts_total": total, "errors_total": errors,
               "seconds": round(elapsed, 1),
               "studies_per_min": round(drafted / elapsed * 60, 2) if drafted and elapsed > 0 else None,
               "stage_seconds": {s: round(v, 2) for s, v in timer.seconds.items()}, "stage_shares": timer.shares()}
    if keys and total == 0:
        raise MedvidError(f"no study could be drafted; see {out / 'errors.jsonl'}")
    return summary


def _draft_studies(cfg: Config, folder: DraftsFolder, todo: list[str], ingest_dir: Path, dicom_root: Path, bank: Bank,
                   patients: dict[str, str], provenance: dict[str, Any], timer: StageTimer) -> tuple[int, int]:
    """Encode and draft ``todo``; each study is written (its drafts.jsonl line appended) as it finishes, a
    study with unreadable loops is drafted from the others; no study retrieves its own or its patient's bank
    rows (``patients``: study -> patient key). Returns (drafted, failed)."""
    from medvid.device import resolve_device
    from medvid.report.draft import Drafter
    from medvid.report.echoprime_bank import EchoPrimeBank
    from medvid.report.echoprime_draft import EchoPrimeDrafter
    from medvid.report.encode import encode_studies, load_encoder, loop_clips
    from medvid.report.provenance import study_instance_uid

    echoprime = isinstance(bank, EchoPrimeBank)  # its numbers need fp32 unless bf16 is asked for
    precision = "fp32" if echoprime and cfg.encoding.precision == "auto" else cfg.encoding.precision
    encoder = load_encoder(cfg.model, cfg.views, resolve_device(cfg.encoding.device), precision, raw_clips=echoprime)
    drafter = (EchoPrimeDrafter(bank, encoder.view_names) if echoprime
               else Drafter(bank, cfg.drafting, patients=patients))
    findings = _findings(cfg.findings, encoder.model) if cfg.findings else None
    loops, cache = loop_clips(encoder, ingest_dir, dicom_root, todo, cfg.encoding)
    bar = progress(total=len(todo), unit="study", desc="draft", enabled=cfg.progress)
    batch: list = []
    started = time.perf_counter()

    def flush() -> int:
        rows = drafter.draft(batch, timer)
        t0 = time.perf_counter()
        for study, row in zip(batch, rows):
            if findings is not None:
                clf, kinds = findings
                row["findings"] = {name: _finding(v[0], kinds[name])
                                   for name, v in clf(study.video_mean[None]).items()}
            row["left_out"] = study.left_out
            uid = (study_instance_uid(ingest_dir, dicom_root, row["videos"][0]["video_key"])
                   if cfg.write_sr and cfg.keep_identifiers else None)
            folder.write_study(row, provenance, write_sr=cfg.write_sr, study_instance_uid=uid)
        timer.add("write", t0)
        bar.update(len(rows))
        bar.set_postfix(per_min=f"{bar.n / max(time.perf_counter() - started, 1e-9) * 60:.1f}")
        batch.clear()
        return len(rows)

    drafted = failed = 0
    try:
        for item in encode_studies(encoder, loops, loop_batch=cfg.encoding.loop_batch,
                                   num_workers=cfg.encoding.num_workers, timer=timer, feature_cache=cache,
                                   partial=True):
            if isinstance(item, dict):
                folder.write_errors(item["study_key"], item["errors"])
                failed += 1
                bar.update(1)
                continue
            batch.append(item)
            if len(batch) >= cfg.batch_studies:
                drafted += flush()
        if batch:
            drafted += flush()
    finally:
        bar.close()
    return drafted, failed


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
