"""Typed configs: YAML layering, key=value overrides, validation."""
from dataclasses import dataclass, field

import pytest
from omegaconf.errors import ValidationError

from medvid.config import describe_settings, load_config, save_config, setting
from medvid.errors import MedvidError


@dataclass
class _Inner:
    size: int = 224


@dataclass
class _Cfg:
    out: str = "out"
    lr: float = 1e-3
    inner: _Inner = field(default_factory=_Inner)


def test_layers_and_overrides(tmp_path, monkeypatch):
    (tmp_path / "job.yaml").write_text("lr: 0.5\ninner:\n  size: 112\n")
    user = tmp_path / "user.yaml"
    user.write_text("out: mine\n")
    monkeypatch.setenv("MEDVID_CONFIG_DIR", str(tmp_path))
    cfg = load_config(_Cfg, "job", user, ["inner.size=64"])
    assert (cfg.out, cfg.lr, cfg.inner.size) == ("mine", 0.5, 64)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Cfg, None, tmp_path / "resolved.yaml").inner.size == 64


def test_typos_and_wrong_types_are_errors():
    with pytest.raises(MedvidError, match="unknown setting 'lrr'; did you mean lr"):
        load_config(_Cfg, overrides=["lrr=1"])
    with pytest.raises(ValidationError):
        load_config(_Cfg, overrides=["inner.size=big"])
    with pytest.raises(MedvidError, match="settings are key=value words, got: inner.size"):
        load_config(_Cfg, overrides=["inner.size"])
    with pytest.raises(FileNotFoundError):
        load_config(_Cfg, config_file="/nonexistent.yaml")


def test_saved_records_hold_no_absolute_paths(tmp_path):
    data = tmp_path / "data" / "P1234567"
    data.mkdir(parents=True)
    cfg = load_config(_Cfg, overrides=[f"out={data}"])
    save_config(cfg, tmp_path / "run" / "model" / "train_config.yaml")
    text = (tmp_path / "run" / "model" / "train_config.yaml").read_text()
    assert str(tmp_path) not in text and "../../data/P1234567" in text


@dataclass
class _Described:
    """Meanings come from field metadata only: a trailing comment is not help."""

    lr: float = setting(1e-3, "peak learning rate")
    steps: int = 10  # a comment, not a meaning
    inner: _Inner = setting(factory=_Inner)
    tags: list[str] = setting(help="labels", factory=lambda: ["a", "b"])


def test_describe_settings_reads_field_metadata(tmp_path, monkeypatch):
    (tmp_path / "described.yaml").write_text("lr: 0.5  # a YAML comment is not help either\n")
    monkeypatch.setenv("MEDVID_CONFIG_DIR", str(tmp_path))
    rows = describe_settings(_Described, "described")
    assert rows == [("lr", "float", "0.5", "peak learning rate"), ("steps", "int", "10", ""),
                    ("inner.size", "int", "224", ""), ("tags", "list[str]", "[a,b]", "labels")]
