"""bench/regress.py: every headline has a recorded value in docs/BENCHMARKS.md, and regressions are flagged."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _regress():
    spec = importlib.util.spec_from_file_location("bench_regress", ROOT / "bench" / "regress.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_headline_has_a_recorded_ratio_in_benchmarks_md():
    regress = _regress()
    recorded = regress.recorded()
    assert set(regress.HEADLINES) <= set(recorded)
    assert all(value > 0 for value in recorded.values())


def test_a_ratio_more_than_20_percent_worse_is_flagged():
    worse = _regress().worse
    assert worse(1.9, 1.5, lower=True, tolerance=0.2) and not worse(1.7, 1.5, lower=True, tolerance=0.2)
    assert worse(0.7, 0.9, lower=False, tolerance=0.2) and not worse(0.8, 0.9, lower=False, tolerance=0.2)
    assert not worse(0.5, 1.5, lower=True, tolerance=0.2) and not worse(3.0, 0.9, lower=False, tolerance=0.2)
