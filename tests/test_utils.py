"""Atomic writes and pseudonyms."""
import os

import pytest

from medvid.utils import atomic_path, atomic_write_text, pseudonym, read_jsonl, write_jsonl


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_outputs_follow_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_jsonl_round_trip_and_pseudonyms(tmp_path):
    rows = [{"a": 1}, {"b": [1, 2]}]
    assert write_jsonl(tmp_path / "r.jsonl", rows) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    assert pseudonym("1.2.3", "s1") == pseudonym("1.2.3", "s1") != pseudonym("1.2.3", "s2")
    assert "1.2.3" not in pseudonym("1.2.3", "s1", prefix="st_")
