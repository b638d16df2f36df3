"""Resume only the same run: a job records the settings that change its results in ``OUT/settings.json``
when it starts, and a later run into the same ``OUT`` must match them (or say ``overwrite=true``).

Paths are recorded as ``name#digest`` of the resolved path, so the record holds no absolute path and a
relative and an absolute spelling of the same folder compare equal.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from medvid.errors import MedvidError
from medvid.utils import atomic_write_text

SETTINGS_FILE = "settings.json"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _portable(value: Any) -> Any:
    """An existing path becomes ``name#digest`` (no absolute path on record, spelling-independent)."""
    if isinstance(value, str) and value and os.path.exists(value):
        resolved = str(Path(value).resolve())
        return f"{Path(resolved).name}#{hashlib.sha256(resolved.encode()).hexdigest()[:12]}"
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def run_settings(cfg: DictConfig | Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """Flattened ``{dotted.key: value}`` of a job config, minus keys (or key prefixes) in ``ignore`` —
    the ones that do not change results (progress bars, worker counts, the output folder itself)."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    skip = tuple(ignore)
    return {k: _portable(v) for k, v in _flatten(values).items()
            if not any(k == s or k.startswith(f"{s}.") for s in skip)}


# Keys of the training jobs' configs that do not change the trained weights (bookkeeping, speed, length).
TRAINING_BOOKKEEPING = ("out", "resume", "cache_dir", "cache_batch", "eval_batch", "train.num_workers",
                        "train.progress", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                        "train.eval_every", "train.device", "train.max_steps", "train.num_threads")


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["train.lr: 0.001 → 0.1", …]`` for every key both records hold with different values. A key only
    one record holds is a setting added to (or dropped from) medvid since the run started, not a change."""
    return [f"{k}: {old[k]} → {new[k]}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


def claim_run(out: str | os.PathLike, settings: Mapping[str, Any], overwrite: bool = False,
              has_results: bool = True, write: bool = True) -> bool:
    """Record ``settings`` in ``OUT/settings.json``; True when ``OUT`` already held this same run (resume).

    A run with other settings is refused with the differing keys named, unless ``overwrite`` or
    ``has_results`` is False (the earlier run left nothing a resume would reuse, e.g. it failed at
    start: the corrected command must not be blocked by it). ``write=False`` only checks (other ranks).
    """
    path = Path(out) / SETTINGS_FILE
    same = False
    if path.exists() and has_results:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        changes = describe_changes(old, settings)
        if changes and not overwrite:
            raise MedvidError(f"{out} holds a run made with other settings ({'; '.join(changes)}); "
                              "rerun with overwrite=true to start afresh there, or choose another out=")
        same = not changes
    if write:
        atomic_write_text(path, json.dumps(dict(settings), indent=1, sort_keys=True, default=str))
    return same
