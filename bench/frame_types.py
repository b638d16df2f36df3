"""Lecture frame-type accuracy (slide / operative / other) of ``medvid.datasets.frame_type.classify_frame``
against a synthetic lecture folder's ground truth (``truth/<name>.json``), at 1 fps, beside the majority
type — the numbers of ``model_cards/lecture-frame-type-classifier.md``.

Usage: ``python bench/frame_types.py LECTURE_DIR`` (e.g. ``demo_out/surgery/lectures``). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from medvid.datasets.frame_type import classify_frame
from medvid.io.video import Video


def measure(root: Path) -> dict:
    truth_pred: list[tuple[str, str]] = []
    lectures = [t for t in (json.loads(f.read_text()) for f in sorted((root / "truth").glob("*.json")))
                if "seconds" in t]  # (the folder also holds the run's settings record)
    for truth in lectures:
        seconds = truth["seconds"]
        with Video(root / truth["video"]) as v:
            for times, frames in v.iter_batches(fps=1.0):
                truth_pred += [(seconds[int(t)]["frame_type"], classify_frame(f))
                               for t, f in zip(times, frames) if int(t) < len(seconds)]
    if not truth_pred:
        raise SystemExit(f"{root}: no lecture with truth/<name>.json")
    counts = Counter(t for t, _ in truth_pred)
    per_type = {k: sum(p == k for t, p in truth_pred if t == k) / n for k, n in counts.items()}
    return {"lectures": len(lectures), "frames": len(truth_pred),
            "accuracy": sum(t == p for t, p in truth_pred) / len(truth_pred),
            "majority_accuracy": counts.most_common(1)[0][1] / len(truth_pred),
            "balanced_accuracy": sum(per_type.values()) / len(per_type), "chance_balanced_accuracy": 1 / len(per_type),
            "recall_per_type": per_type, "support": dict(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lectures", type=Path)
    print(json.dumps(measure(ap.parse_args().lectures), indent=1))


if __name__ == "__main__":
    main()
