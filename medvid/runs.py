"""Job output folders: every job claims its ``OUT`` (:func:`claim_out`) before writing there.

``OUT`` must be new, empty or provably the job's own output; the job records its name and the settings that
change its results in ``OUT/settings.json``, and a later run into the same ``OUT`` resumes only with the same
settings (``overwrite=true`` starts afresh, in the job's own folders only).

Paths are recorded as ``name#digest`` of the resolved path (``#digest`` with ``names=False``), so the record
holds no absolute path and a relative and an absolute spelling of the same folder compare equal.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from medvid.errors import MedvidError
from medvid.utils import atomic_write_text

SETTINGS_FILE = "settings.json"
JOB_KEY = "medvid_job"  # the record names the job that wrote OUT: proof that OUT is its own output


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _portable(value: Any, names: bool = True) -> Any:
    """An existing path becomes ``name#digest`` (no absolute path on record, spelling-independent); without
    ``names`` only ``#digest`` (a folder name can identify a patient)."""
    if isinstance(value, str) and value and os.path.exists(value):
        resolved = str(Path(value).resolve())
        return f"{Path(resolved).name if names else ''}#{hashlib.sha256(resolved.encode()).hexdigest()[:12]}"
    if isinstance(value, list):
        return [_portable(v, names) for v in value]
    return value


def run_settings(cfg: DictConfig | Mapping[str, Any], ignore: Iterable[str] = (), names: bool = True) -> dict[str, Any]:
    """Flattened ``{dotted.key: value}`` of a job config, minus keys (or key prefixes) in ``ignore`` —
    the ones that do not change results (progress bars, worker counts, the output folder itself)."""
    values = (OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
              else asdict(cfg) if is_dataclass(cfg) else dict(cfg))
    skip = tuple(ignore)
    return {k: _portable(v, names) for k, v in _flatten(values).items()
            if not any(k == s or k.startswith(f"{s}.") for s in skip)}


# Keys of the training jobs' configs that do not change the trained weights (bookkeeping, speed, length).
TRAINING_BOOKKEEPING = ("out", "resume", "cache_dir", "cache_batch", "eval_batch", "train.num_workers",
                        "train.progress", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                        "train.eval_every", "train.device", "train.max_steps", "train.num_threads")


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["train.lr: 0.001 → 0.1", …]`` for every key both records hold with different values. A key only
    one record holds is a setting added to (or dropped from) medvid since the run started, not a change."""
    return [f"{k}: {_shown(old[k])} → {_shown(new[k])}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


def _shown(value: Any) -> Any:
    return '""' if value == "" else value


def _read_record(path: Path) -> dict[str, Any] | None:
    """The settings record at ``path``; None when absent or not a JSON object (then it proves nothing)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _refuse_foreign(out: Path, job: str, restart: str) -> None:
    """Refuse a folder that exists and holds entries nobody proved to be ``job``'s (name a few)."""
    if out.exists() and not out.is_dir():
        raise MedvidError(f"out={out} is a file, not a folder; choose a new or empty folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise MedvidError(f"refusing to write into {out}: it holds files that medvid {job} did not write ({shown}); "
                          f"choose a new or empty folder as out= ({restart} only replaces medvid {job}'s own output)")


def claim_out(out: str | os.PathLike, job: str, settings: Mapping[str, Any], *, overwrite: bool = False,
              has_results: bool = True, own: Callable[[Path], bool] | None = None, record: str = SETTINGS_FILE,
              restart: str = "overwrite=true", write: bool = True) -> bool:
    """Claim ``OUT`` for a run of ``job`` with ``settings``: True when it already held this same run (resume).

    ``OUT`` must be absent, empty, or provably ``job``'s own output: its record (``OUT/<record>``, naming the
    job) or, for outputs older than records, ``own(OUT)``; anything else may be a user's data and is refused
    untouched, naming a few of its entries, as is the output of another job. A run with other settings is
    refused with ``old → new`` per key, unless ``overwrite`` or ``has_results`` is False (the earlier run
    left nothing a resume would reuse: a typo must not block the corrected command); ``restart`` is the
    setting the refusal offers for that. Records ``settings`` and ``job`` unless ``write`` is False (other
    ranks only check).
    """
    out = Path(out)
    old = _read_record(out / record)
    old_job = old.pop(JOB_KEY, None) if old is not None else None
    ours = old is not None and (old_job == job or (old_job is None and bool(set(old) & set(settings))))
    if old_job is not None and old_job != job:
        raise MedvidError(f"{out} holds the output of medvid {old_job}, not medvid {job}; choose another out=")
    same = False
    if ours:
        changes = describe_changes(old, settings)
        if changes and has_results and not overwrite:
            raise MedvidError(f"{out} holds a medvid {job} run made with other settings ({'; '.join(changes)}); "
                              f"rerun with {restart} to start afresh there, or choose another out=")
        same = not changes
    elif not (own is not None and out.is_dir() and own(out)):
        _refuse_foreign(out, job, restart)
    if write:
        record_run(out, job, settings, record)
    return same


def record_run(out: str | os.PathLike, job: str, settings: Mapping[str, Any], record: str = SETTINGS_FILE) -> None:
    """Write ``OUT/<record>`` (the job and its settings), for a job that replaces ``OUT`` as a whole after
    :func:`claim_out` checked it (``write=False``)."""
    atomic_write_text(Path(out) / record, json.dumps({JOB_KEY: job, **settings}, indent=1, sort_keys=True, default=str))
