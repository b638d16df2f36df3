"""Typed job configs: a dataclass schema per job, YAML defaults in ``configs/``, ``key=value`` overrides.

Precedence (last wins): dataclass defaults < ``configs/<job>.yaml`` < ``--config FILE`` < overrides.
OmegaConf validates types against the schema, so a typo in a key or a wrong type is an error.
"""
from __future__ import annotations

import os
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """Folder holding the shipped YAML configs (``MEDVID_CONFIG_DIR`` overrides)."""
    env = os.environ.get("MEDVID_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


def load_config(
    schema: Any,
    name: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Build a validated config for ``schema`` (a dataclass type or instance).

    ``name`` selects ``configs/<name>.yaml`` when it exists; ``config_file`` is a user YAML;
    ``overrides`` are ``key=value`` strings (dotted keys allowed).
    """
    if not is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass, got {schema!r}")
    cfg = OmegaConf.structured(schema)
    layers = []
    if name is not None:
        shipped = config_dir() / f"{name}.yaml"
        if shipped.exists():
            layers.append(OmegaConf.load(shipped))
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        layers.append(OmegaConf.load(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"overrides must look like key=value, got: {bad}")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.merge(cfg, *layers)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    from medvid.utils import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
