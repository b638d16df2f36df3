"""Zero-shot phase recognition on the synthetic world, against chance and a linear probe.

Chain, every step through the real jobs: ``synth lectures`` → ``lectures index`` → ``pretrain``
(surgical, ``configs/surgical_pretrain.yaml``) → ``synth surgery`` (train videos 1..N and test
videos 41.., the ``cholec80_40_40`` split) → ``zero-shot phase`` on both splits with the
embeddings saved → a linear probe (scikit-learn ``LogisticRegression``) trained on the train
split's per-second embeddings and ground truth, scored on the test split with the same strict
and relaxed metrics. The probe uses the very features the zero-shot head scores, so it is the
supervised ceiling of that representation.

Usage: ``python bench/zero_shot_world.py --work /tmp/zs_world`` (each step resumes). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medvid.config import config_dir, load_config
from medvid.datasets.cholec80 import Cholec80
from medvid.metrics import relaxed_phase_metrics, strict_phase_metrics
from medvid.pipelines import lectures_index, pretrain, synth_lectures, synth_surgery, zero_shot


def _job(module, name: str | None, config_file: Path | None, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    summary = module.run(load_config(module.Config, name, config_file, overrides))
    return {"seconds": round(time.perf_counter() - t0, 1), "summary": summary}


def _split_arrays(root: Path, out: Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(video, embeddings [N, D], gt [N]) for each video of a split that zero-shot processed."""
    ds, rows = Cholec80(root), []
    for name in ds.videos(split):
        times = np.loadtxt(out / "predictions" / f"{name}.csv", delimiter=",", skiprows=1, usecols=0, ndmin=1)
        rows.append((name, np.load(out / "embeddings" / f"{name}.npy"), ds.phases_at(name, times)))
    return rows


def _scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    s, r = strict_phase_metrics(pairs), relaxed_phase_metrics(pairs)
    return {"strict_accuracy": s["accuracy"], "strict_macro_f1": s["macro_f1"],
            "relaxed_accuracy": r["accuracy"], "relaxed_jaccard": r["jaccard"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_zs_world"))
    ap.add_argument("--lectures", type=int, default=12)
    ap.add_argument("--train-videos", type=int, default=6)
    ap.add_argument("--test-videos", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps")
    ap.add_argument("--input-size", type=int, default=112, help="frame size of the model (pretrain and zero-shot)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w = args.work
    steps = {}
    steps["synth_lectures"] = _job(synth_lectures, "synth_lectures", None, [
        f"out={w / 'lectures'}", f"lectures={args.lectures}", f"seed={args.seed}"])
    steps["lectures_index"] = _job(lectures_index, "lectures_index", None, [
        f"root={w / 'lectures'}", f"out={w / 'index'}"])
    steps["pretrain"] = _job(pretrain, None, config_dir() / "surgical_pretrain.yaml", [
        f"out={w / 'pretrain'}", f"lectures.pairs={w / 'index' / 'pairs.jsonl'}", f"lectures.root={w / 'lectures'}",
        f"train.max_steps={args.steps}", "train.progress=false", f"model_overrides.input_size={args.input_size}"])
    ids = list(range(1, args.train_videos + 1)) + list(range(41, 41 + args.test_videos))
    steps["synth_surgery"] = _job(synth_surgery, "synth_surgery", None, [
        f"out={w / 'surgery'}", f"ids={json.dumps(ids)}", f"seed={args.seed + 100}"])
    model = w / "pretrain" / "model"
    results = {}
    for split in ("train", "test"):
        steps[f"zero_shot_{split}"] = _job(zero_shot, "zero_shot", None, [
            f"data_root={w / 'surgery'}", f"model={model}", f"out={w / f'zs_{split}'}",
            f"split=cholec80_40_40:{split}", "save_embeddings=true"])
    metrics = json.loads((w / "zs_test" / "metrics.json").read_text())["results"]["raw"]
    results["zero_shot"] = {"strict_accuracy": metrics["strict"]["accuracy"],
                            "strict_macro_f1": metrics["strict"]["macro_f1"],
                            "relaxed_accuracy": metrics["relaxed"]["accuracy"],
                            "relaxed_jaccard": metrics["relaxed"]["jaccard"]}

    train = _split_arrays(w / "surgery", w / "zs_train", "cholec80_40_40:train")
    test = _split_arrays(w / "surgery", w / "zs_test", "cholec80_40_40:test")
    x = np.concatenate([e for _, e, g in train])[np.concatenate([g >= 0 for _, _, g in train])]
    y = np.concatenate([g[g >= 0] for _, _, g in train])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(x, y)
    results["linear_probe"] = _scores([(g[g >= 0], probe.predict(e[g >= 0])) for _, e, g in test])
    majority = np.bincount(y).argmax()
    results["majority_class"] = _scores([(g[g >= 0], np.full((g >= 0).sum(), majority)) for _, _, g in test])
    results["chance_accuracy"] = 1 / 7
    out = {"results": results, "train_samples": int(len(y)), "test_videos": len(test),
           "pretrain_metrics": steps["pretrain"]["summary"],
           "seconds": {k: v["seconds"] for k, v in steps.items()}}
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
