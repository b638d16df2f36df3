"""Typed configs: YAML layering, key=value overrides, validation."""
from dataclasses import dataclass, field

import pytest
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
    with pytest.raises(MedvidError, match=r"^inner.size=big: expected int$"):
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


@dataclass
class _Ranged:
    count: int = setting(4, "how many", min=1)
    quality: int = setting(90, "JPEG quality", min=1, max=100)
    ids: list[int] = setting(help="video numbers", factory=list)
    weights: dict[str, float] = setting(help="shares", factory=dict)
    inner: _Inner = setting(factory=_Inner)


def test_declared_ranges_are_checked_and_shown():
    """A count of 0 or -3 would run and write an empty (or broken) dataset: refused with the range."""
    with pytest.raises(MedvidError, match=r"^count=0: must be >= 1$"):
        load_config(_Ranged, overrides=["count=0"])
    with pytest.raises(MedvidError, match=r"^quality=101: must be between 1 and 100$"):
        load_config(_Ranged, overrides=["quality=101"])
    assert load_config(_Ranged, overrides=["count=1", "quality=100"]).count == 1
    kinds = {key: kind for key, kind, _, _ in describe_settings(_Ranged)}
    assert kinds["count"] == "int, >= 1" and kinds["quality"] == "int, between 1 and 100"


def test_wrong_types_name_the_setting_the_value_and_the_type():
    with pytest.raises(MedvidError, match=r"^ids=41,42: expected list\[int\] \(lists are written in brackets"):
        load_config(_Ranged, overrides=["ids=41,42"])
    with pytest.raises(MedvidError, match=r"^ids\[1\]=b: expected int \(in ids: list\[int\]\)$"):
        load_config(_Ranged, overrides=["ids=[1,b]"])
    with pytest.raises(MedvidError, match=r"^weights.rgb=x: expected float \(in weights: dict\[str, float\]\)$"):
        load_config(_Ranged, overrides=["weights.rgb=x"])
