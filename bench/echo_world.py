"""Echo drafting on procedurally varied worlds: EF MAE against the training-mean baseline and the binary
phenotypes' AUROC, per world and as mean and spread over worlds.

Per seed (``synth echo style=random seed=K``: its own probe geometry, gain, speckle, colour map, heart
rate and cycle, wall motion, report phrasing and section order), the echo stages of ``medvid demo``
run as the demo runs them, each the real job with its shipped config plus the demo's overrides: synth
echo → ingest → view classifier → study/report pretraining → bank (train) → calibration (val) →
drafts (test) → evaluation. Development and report seeds are fixed in ``docs/zero_shot.md``.

Usage: ``python bench/echo_world.py --work /tmp/echo_worlds --seeds 3000 3001 [--quick]``. Prints JSON;
``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvid.config import load_config
from medvid.pipelines import demo
from medvid.utils import atomic_write_text, jsonable

ECHO_STAGES = ("synth_echo", "ingest", "train_views", "pretrain_echo", "bank_build", "bank_calibrate", "draft",
               "evaluate_drafts")


def run_world(work: Path, seed: int, quick: bool) -> dict[str, Any]:
    """The demo's echo chain on world ``seed``; returns the evaluation's headline numbers and stage seconds."""
    cfg = load_config(demo.Config, "demo", None, [f"out={work}", f"seed={seed}", f"quick={str(quick).lower()}"])
    done = work / "stages"
    seconds, results = {}, {}
    for stage in demo.stages(cfg, demo.Paths(work)):
        if stage.name not in ECHO_STAGES:
            continue
        record = done / f"{stage.name}.json"
        if record.exists():  # finished earlier (resume)
            results[stage.name] = json.loads(record.read_text())
            continue
        extra = list(cfg.stage_overrides.get(stage.name, []))
        if stage.name == "synth_echo":
            extra.append("style=random")
        module = importlib.import_module(f"medvid.pipelines.{stage.job}")
        t0 = time.perf_counter()
        results[stage.name] = module.run(load_config(module.Config, stage.config, None, [*stage.overrides, *extra])) or {}
        seconds[stage.name] = round(time.perf_counter() - t0, 1)
        atomic_write_text(record, json.dumps(jsonable(results[stage.name]), default=str))
    ev = results["evaluate_drafts"]
    head = {"ef_mae": ev["ef_mae"], "ef_mae_train_mean": ev["ef_mae_train_mean"]}
    head["ef_mae_x_baseline"] = head["ef_mae"] / head["ef_mae_train_mean"]
    head.update({k: ev[k] for k in sorted(ev) if k.endswith("_auroc")})
    return {"seed": seed, "headline": head, "studies": ev.get("studies"), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_echo_worlds"))
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--quick", action="store_true", help="the demo's quick sizes (a smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    worlds = []
    for seed in args.seeds:
        worlds.append(run_world(args.work / f"seed{seed}", seed, args.quick))
        print(json.dumps(jsonable(worlds[-1]), default=str), flush=True)
    keys = [k for k in worlds[0]["headline"] if all(k in w["headline"] for w in worlds)]
    table = {k: {"mean": float(np.nanmean([w["headline"][k] for w in worlds])),
                 "std": float(np.nanstd([w["headline"][k] for w in worlds])), "n": len(worlds)} for k in keys}
    text = json.dumps(jsonable({"seeds": args.seeds, "quick": args.quick, "table": table, "worlds": worlds}), indent=2,
                      default=str)
    if args.out:
        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
