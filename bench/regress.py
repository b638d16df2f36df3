"""Re-run the headline benchmarks (quick settings) and compare each ratio with the value docs/BENCHMARKS.md records.

Each headline is a ratio measured inside one benchmark process (so machine load cancels out, mostly); the
recorded value is read from the "Headline ratios" table of docs/BENCHMARKS.md (the row of the same name).
A ratio more than ``--tolerance`` (20 %) worse than recorded is flagged, and the exit status is 1.

Run:  .venv/bin/python bench/regress.py [--only p1_medvid_over_floor ...] [--tolerance 0.2]
Run it before closing any issue that touches decoding, sampling, encoding or retrieval, and say so.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"


@dataclass(frozen=True)
class Headline:
    """A ratio ``key`` (dotted path into the JSON a bench prints) of ``args`` (quick settings); ``lower``: smaller
    is better."""

    args: tuple[str, ...]
    key: str
    lower: bool


P1 = ("bench/p1.py", "--files", "10", "--rounds", "2")
HEADLINES = {
    "p1_medvid_over_floor": Headline(P1, "over_floor.medvid", lower=True),
    "p1_first_read_over_floor": Headline(P1, "over_floor.medvid_first", lower=True),
    "p1_reference_over_medvid": Headline(P1, "reference_over_medvid", lower=False),
    "zero_shot_854x480_job_vs_backbone": Headline(
        ("bench/zero_shot.py", "--minutes", "2", "--size", "854x480", "--ref-frames", "10", "--backbone-repeats", "2"),
        "ratio_job_vs_backbone_cpu", lower=False),
    "zero_shot_224_job_vs_backbone": Headline(
        ("bench/zero_shot.py", "--minutes", "2", "--size", "224x224", "--ref-frames", "10", "--backbone-repeats", "2"),
        "ratio_job_vs_backbone_cpu", lower=False),
}


def recorded(doc: Path = DOC) -> dict[str, float]:
    """``name → value`` from the rows ``| `name` | value | …`` of the "Headline ratios" table."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## Headline ratios", 1)[-1].split("\n## ", 1)[0]
    return {m[1]: float(m[2]) for m in re.finditer(r"^\|\s*`([\w]+)`\s*\|\s*([0-9.]+)\s*\|", section, re.M)}


def worse(now: float, then: float, lower: bool, tolerance: float) -> bool:
    """True when ``now`` is more than ``tolerance`` worse than ``then`` in the direction that matters."""
    return now > then * (1 + tolerance) if lower else now < then / (1 + tolerance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(HEADLINES), help="these headlines only")
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medvid_regress")
    args = ap.parse_args()
    then = recorded()
    results, cache = [], {}
    for name in args.only or HEADLINES:
        h = HEADLINES[name]
        if h.args not in cache:  # one run per command: several headlines share it
            cache[h.args] = subprocess_json(h, args.work / name)
        now = pick(cache[h.args], h.key)
        rec = then.get(name)
        flag = rec is not None and worse(now, rec, h.lower, args.tolerance)
        results.append({"headline": name, "now": round(now, 3), "recorded": rec, "better": "lower" if h.lower
                        else "higher", "regressed": flag})
        print(f"{name:40s} now {now:8.3f}   recorded {rec if rec is not None else '-':>8}   "
              f"({'lower' if h.lower else 'higher'} is better){'   WORSE > ' + format(args.tolerance, '.0%') if flag else ''}",
              file=sys.stderr)
    print(json.dumps({"tolerance": args.tolerance, "headlines": results}, indent=2))
    sys.exit(1 if any(r["regressed"] for r in results) else 0)


def subprocess_json(h: Headline, work: Path) -> dict:
    """The first JSON object the bench run prints."""
    out = subprocess.run([sys.executable, *h.args, "--work", str(work)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return json.JSONDecoder().raw_decode(out[out.index("{"):])[0]


def pick(data: dict, key: str) -> float:
    for part in key.split("."):
        data = data[part]
    return float(data)


if __name__ == "__main__":
    main()
