"""Typed job configs: a dataclass schema per job, YAML defaults in ``configs/``, ``key=value`` overrides.

Precedence (last wins): dataclass defaults < ``configs/<job>.yaml`` < ``--config FILE`` < overrides.
OmegaConf validates types against the schema, so a typo in a key or a wrong type is an error.
"""
from __future__ import annotations

import os
import re
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from medvid.errors import MedvidError


def setting(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, min: float | None = None,
            max: float | None = None) -> Any:
    """A job setting: its default (or ``factory`` for a list, dict or nested settings), its one-line meaning,
    which ``medvid JOB --help`` prints, and an optional inclusive range (``min``/``max``) that ``load_config``
    checks before any work. The meaning lives here, once, next to the type."""
    metadata = {"help": help, "min": min, "max": max}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def config_dir() -> Path:
    """Folder holding the shipped YAML configs: ``MEDVID_CONFIG_DIR``, else ``medvid/configs`` of an installed
    wheel, else ``configs/`` of the source tree."""
    env = os.environ.get("MEDVID_CONFIG_DIR")
    if env:
        return Path(env)
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "configs"


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
        shipped_name = config_dir() / f"{path.stem}.yaml"
        if not path.exists() and path.parent == Path(".") and shipped_name.is_file():
            path = shipped_name  # a shipped config by name (`medvid pretrain echo_pretrain`), e.g. from a wheel
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        layers.append(OmegaConf.load(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise MedvidError(f"settings are key=value words, got: {' '.join(bad)}")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    cls = schema if isinstance(schema, type) else type(schema)
    try:
        merged = OmegaConf.merge(cfg, *layers)
    except ConfigKeyError as exc:
        raise MedvidError(f"unknown setting {exc.full_key!r}{_suggest(cfg, str(exc.full_key))}") from exc
    except ValidationError as exc:  # a wrong type: one line naming the setting, the value and the type
        raise MedvidError(_type_error(cls, exc)) from exc
    _check_ranges(cls, merged)
    return merged


def _type_error(cls: type, exc: ValidationError) -> str:
    """``ids=41,42: expected list[int] (lists are written in brackets: ids=[a,b])``; ``ids[0]=a: expected int
    (in ids: list[int])``."""
    key = str(exc.full_key)
    name, hint = _field_type(cls, key)
    value = getattr(exc, "value", None)
    value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
    text = f"{key}={_format_value(value)}: expected "
    if hint is None:
        return text + "another type"
    if key != name and typing.get_args(hint):  # an element of a list or dict setting
        return text + f"{_type_name(typing.get_args(hint)[-1])} (in {name}: {_type_name(hint)})"
    text += _type_name(hint)
    if typing.get_origin(hint) in (list, tuple):
        text += f" (lists are written in brackets: {key}=[a,b])"
    return text


def _field_type(cls: type, key: str) -> tuple[str, Any]:
    """The setting that a dotted key falls under and its declared type: ``train.lr`` itself; for ``ids[0]`` or
    ``weights.rgb`` the list or dict setting that holds it (``ids``, ``weights``). Type None for no field."""
    hint: Any = cls
    name: list[str] = []
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not is_dataclass(hint):
            break
        hint = typing.get_type_hints(hint).get(part)
        name.append(part)
        if hint is None:
            break
    return ".".join(name), hint


def _check_ranges(cls: type, cfg: DictConfig, prefix: str = "") -> None:
    """Refuse a setting outside its declared ``setting(min=, max=)`` range, before any work."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, value = f"{prefix}{f.name}", cfg.get(f.name)
        if is_dataclass(hints[f.name]):
            _check_ranges(hints[f.name], value, f"{key}.")
            continue
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if value is None or (low is None and high is None):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            raise MedvidError(f"{key}={_format_value(value)}: must be {_range_text(low, high)}")


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"


def _type_name(hint: Any) -> str:
    """``int``, ``list[str]``, ``Optional[str]``: a type as ``--help`` and errors print it."""
    return re.sub(r"typing\.|<class '([^']+)'>", r"\1", str(hint))


def setting_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config (``train.max_steps`` …)."""
    keys = []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        keys += setting_keys(value, f"{name}.") if isinstance(value, DictConfig) else [name]
    return keys


def _suggest(cfg: DictConfig, key: str) -> str:
    """'; did you mean train.max_steps?' — by last component first (``max_steps``), then by spelling."""
    keys = setting_keys(cfg)
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf] or get_close_matches(key, keys, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else f"; known settings: {', '.join(keys)}"


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically). It is a record that travels with outputs, so data
    paths are written relative to the file's folder: no absolute path (a home or a patient folder) in it."""
    from medvid.utils import atomic_write_text

    folder = Path(path).resolve().parent

    def relative(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if isinstance(value, str) and value and (os.path.isabs(value) or os.path.exists(value)):
            return os.path.relpath(Path(value).resolve(), folder)
        return value

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(relative(OmegaConf.to_container(cfg, resolve=True)))))


def require_dirs(**paths: str) -> None:
    """Refuse missing inputs before any work: ``dicom_root does not exist: …`` (names as the user set them)."""
    for key, value in paths.items():
        if not value:
            raise MedvidError(f"{key} is required")
        if not Path(value).is_dir():
            raise MedvidError(f"{key} does not exist or is not a folder: {value}")


def describe_settings(schema: Any, name: str | None = None) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` of every setting of a job: types from the dataclass, defaults after
    the shipped YAML, meanings from each field's ``setting(..., help)`` metadata (nested settings included)."""
    cfg = load_config(schema, name)
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            key = f"{prefix}{f.name}"
            if is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{key}.")
                continue
            kind = _type_name(hints[f.name])
            low, high = f.metadata.get("min"), f.metadata.get("max")
            if low is not None or high is not None:
                kind += f", {_range_text(low, high)}"
            value = OmegaConf.select(cfg, key)
            value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            rows.append((key, kind, _format_value(value), f.metadata.get("help", "")))

    walk(schema if isinstance(schema, type) else type(schema), "")
    return rows


def _format_value(value: Any) -> str:
    """A default as it is written on the command line: ``true``, ``null``, ``[a,b]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)
