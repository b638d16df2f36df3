"""Zero-shot phase and tool recognition on a synthetic world, against chance, an untrained model and a
linear probe, with a learning curve over the number of pretraining lectures.

Chain per style (``--style a``: the world medvid was developed on; ``--style b``: the shifted world
nobody tunes on), every step through the real jobs: ``synth lectures`` (the largest size) →
``lectures index`` → per size N: the pairs of lectures talk01..talkN → ``pretrain``
(``configs/surgical_pretrain.yaml``) → ``synth surgery`` (train videos 1..M, test videos 41..: the
``cholec80_40_40`` split) → ``zero-shot phase`` with the shipped defaults on both splits (embeddings
saved), and on the test split once more with the previous defaults (frame-level, no calibration, no
prompt expansion, no self-training, no smoothing, tools against "absent" sentences).

From the saved embeddings (the very features the job scored) the script then measures, with the job's
own functions: the method variants one by one (calibration, prompt expansion, HMM), tool AP per tool
with its prevalence (= AP of a random scorer), and a linear probe (scikit-learn ``LogisticRegression``,
standardised) trained on the train split's per-second embeddings — the supervised ceiling of that
representation — for phases and for each tool. An untrained model (same architecture, random
projection) goes through the same zero-shot job.

With ``--style random --seeds 1000 1001 …`` each seed is its own world (``synth lectures`` and ``synth
surgery`` with that seed show the same world), run through the same chain; ``table`` then holds, per
size, the mean and spread (std over seeds) of zero-shot and probe strict accuracy / macro-F1, their
ratio, and tool mAP against prevalence. Development and report seeds are fixed in ``docs/zero_shot.md``.
``--pretrain-set key=value`` passes settings to ``pretrain`` (a lever), kept apart under ``--tag``.

Usage: ``python bench/zero_shot_world.py --work /tmp/zsw --style b --sizes 4 8 16`` (each step resumes);
``python bench/zero_shot_world.py --work /tmp/zsw --style random --seeds 1000 1001 --sizes 8 16 --frame-size 112``.
Prints JSON; ``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medvid.config import config_dir, load_config
from medvid.datasets.cholec80 import Cholec80
from medvid.metrics import relaxed_phase_metrics, strict_phase_metrics, tool_average_precision
from medvid.models.checkpoint import load_video_text_model, record_training_input
from medvid.pipelines import lectures_index, pretrain, synth_lectures, synth_surgery, zero_shot
from medvid.transforms.contract import Sampling
from medvid.utils import atomic_write_text, jsonable, read_jsonl, write_jsonl
from medvid.vocab import CHOLEC80_PHASES
from medvid.zeroshot.adaptation import self_train
from medvid.zeroshot.calibration import calibrate_logits
from medvid.zeroshot.classifier import PhaseClassifier, ToolClassifier
from medvid.zeroshot.expansion import corpus_sentences, expand_classes
from medvid.zeroshot.prompts import load_prompt_set, model_text_encoder
from medvid.zeroshot.recognise import prompt_file
from medvid.zeroshot.smoothing import smooth

SPLIT = "cholec80_40_40"
PREVIOUS_DEFAULTS = ["clip_frames=1", "calibration=none", "expand_k=0", "smoothing=none", "tool_reference=absent",
                     "adaptation=none"]


def _job(module, name: str | None, config_file: Path | None, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    summary = module.run(load_config(module.Config, name, config_file, overrides))
    return {"seconds": round(time.perf_counter() - t0, 1), "summary": summary}


def _pretrain_overrides(w: Path, pairs: Path, args, world: Path) -> list[str]:
    return [f"out={w / 'pretrain'}", f"lectures.pairs={pairs}", f"lectures.root={world / 'lectures'}",
            f"train.max_steps={args.steps}", "train.progress=false", f"model_overrides.input_size={args.input_size}",
            *args.pretrain_set]


def _untrained(w: Path, args) -> Path:
    """The architecture pretraining starts from, saved as it is (random projection and temporal module)."""
    model_dir = w / "model"
    if not (model_dir / "config.json").exists():
        cfg = load_config(pretrain.Config, None, config_dir() / "surgical_pretrain.yaml",
                          _pretrain_overrides(w, Path("unused"), args, w))
        torch.manual_seed(cfg.train.seed)
        model = pretrain.build_model(cfg)
        record_training_input(model, Sampling(cfg.lectures.n_frames, cfg.lectures.sample_fps, mask="none"))
        model.save_pretrained(model_dir)
    return model_dir


def _videos(root: Path, zs: Path, split: str) -> list[dict[str, Any]]:
    ds, rows = Cholec80(root), []
    for name in ds.videos(f"{SPLIT}:{split}"):
        times = np.loadtxt(zs / "predictions" / f"{name}.csv", delimiter=",", skiprows=1, usecols=0, ndmin=1)
        rows.append({"name": name, "emb": torch.from_numpy(np.load(zs / "embeddings" / f"{name}.npy")),
                     "phase": ds.phases_at(name, times), "tools": ds.tools_at(name, times)})
    return rows


def _phase_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    s, r = strict_phase_metrics(pairs), relaxed_phase_metrics(pairs)
    return {"strict_accuracy": s["accuracy"], "strict_macro_f1": s["macro_f1"],
            "relaxed_accuracy": r["accuracy"], "relaxed_jaccard": r["jaccard"]}


def _phase_eval(videos, predict: Callable[[torch.Tensor], np.ndarray]) -> dict[str, float]:
    pairs = [(v["phase"][v["phase"] >= 0], predict(v["emb"])[v["phase"] >= 0]) for v in videos]
    return _phase_scores(pairs)


def _phase_eval_probs(videos, probs: list[np.ndarray], defaults, hmm: bool) -> dict[str, float]:
    """Scores of per-video probabilities ``[T, C]``, HMM-smoothed with the job's settings when ``hmm``."""
    preds = [(smooth(p, "hmm", stay=defaults.hmm_stay, backward=defaults.hmm_backward) if hmm else p).argmax(1)
             for p in probs]
    return _phase_scores([(v["phase"][v["phase"] >= 0], q[v["phase"] >= 0]) for v, q in zip(videos, preds)])


def _tool_eval(videos, score: Callable[[torch.Tensor], np.ndarray], classes: list[str]) -> dict[str, Any]:
    y = np.concatenate([v["tools"] for v in videos])
    s = np.concatenate([score(v["emb"]) for v in videos])
    keep = (y >= 0).all(1)
    r = tool_average_precision(y[keep], s[keep])
    prev = y[keep].mean(0)
    ap = dict(zip(classes, r["ap"]))
    return {"map": r["map"], "ap": ap, "prevalence": dict(zip(classes, prev)), "prevalence_map": float(prev.mean()),
            "tools_above_prevalence": int(sum(a > p for a, p in zip(r["ap"], prev)))}


def _zero_shot_variants(model_dir: Path, corpus: Path | None, test, defaults) -> dict[str, Any]:
    """Each method on its own and together, from the default job's embeddings (same functions as the job)."""
    model = load_video_text_model(model_dir)
    encode = model_text_encoder(model)
    phases = load_prompt_set(prompt_file("cholec80", "phase"))
    tools = load_prompt_set(prompt_file("cholec80", "tools"))
    head = PhaseClassifier.from_prompts(phases, encode, defaults.scale)
    sentences = corpus_sentences(corpus) if corpus else []
    grow = (lambda emb, classes: expand_classes(emb, classes, sentences, encode, defaults.expand_k,
                                                defaults.expand_weight, defaults.expand_margin).class_emb)
    expanded = grow(head.class_emb, phases.classes) if sentences else head.class_emb

    def phase_probs(class_emb, calibration, strength, adapt):
        probs = [calibrate_logits(v["emb"], PhaseClassifier(class_emb, phases.classes, defaults.scale).logits,
                                  calibration, strength).softmax(-1).numpy() for v in test]
        if adapt:  # over all test videos, as the job adapts over its run
            probs = self_train([v["emb"].numpy() for v in test], probs, defaults.adaptation_fraction,
                               defaults.adaptation_c, defaults.adaptation_mix)
        return probs

    rows = {}
    adapt = defaults.adaptation != "none"
    for label, cemb, cal, st, ad in (("prompts as written", head.class_emb, "none", 0.0, False),
                                     ("+ calibration prior 0.5", head.class_emb, "prior", 0.5, False),
                                     ("+ calibration centre 0.8", head.class_emb, "centre", 0.8, False),
                                     ("+ expansion", expanded, "none", 0.0, False),
                                     ("+ expansion + prior 0.5", expanded, "prior", 0.5, False),
                                     ("+ expansion + centre 0.8", expanded, "centre", 0.8, False),
                                     ("+ expansion + prior 0.5 + self-training", expanded, "prior", 0.5, True),
                                     ("+ self-training (prompts as written)", head.class_emb, "none", 0.0, True),
                                     ("defaults (job settings)", expanded if sentences else head.class_emb,
                                      defaults.calibration, defaults.calibration_strength, adapt)):
        probs = phase_probs(cemb, cal, st, ad)
        rows[label] = _phase_eval_probs(test, probs, defaults, False)
        rows[label + " + hmm"] = _phase_eval_probs(test, probs, defaults, True)
    tool_rows = {}
    for ref in ("absent", "tools"):
        th = ToolClassifier.from_prompts(tools, encode, defaults.tool_scale, reference=ref)
        tool_rows[f"{ref} reference"] = _tool_eval(test, lambda e: th.probs(e).numpy().round(5), tools.classes)
        if ref == "absent":  # the previous default scale, as the job wrote it (5 decimals)
            old = ToolClassifier.from_prompts(tools, encode, defaults.scale, reference=ref)
            tool_rows["absent reference, scale 100"] = _tool_eval(test, lambda e: old.probs(e).numpy().round(5),
                                                                  tools.classes)
        if sentences:
            th.class_emb = grow(th.class_emb, tools.classes)
            tool_rows[f"{ref} reference + expansion"] = _tool_eval(test, lambda e: th.probs(e).numpy().round(5),
                                                                   tools.classes)
    return {"phase": rows, "tools": tool_rows}


def _probe(train, test, tool_classes: list[str], defaults) -> dict[str, Any]:
    x = np.concatenate([v["emb"].numpy()[v["phase"] >= 0] for v in train])
    y = np.concatenate([v["phase"][v["phase"] >= 0] for v in train])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(x, y)
    phase = _phase_eval(test, lambda e: clf.predict(e.numpy()))

    def probe_probs(e):  # [T, phases] even if a phase is missing from the train split
        p = np.zeros((len(e), len(CHOLEC80_PHASES)))
        p[:, clf.classes_] = clf.predict_proba(e.numpy())
        return p

    phase_hmm = _phase_eval_probs(test, [probe_probs(v["emb"]) for v in test], defaults, True)
    majority = int(np.bincount(y).argmax())
    xt = np.concatenate([v["emb"].numpy() for v in train])
    yt = np.concatenate([v["tools"] for v in train])
    keep = (yt >= 0).all(1)
    models = {}
    for j, c in enumerate(tool_classes):
        if 0 < yt[keep, j].sum() < keep.sum():
            models[c] = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(xt[keep], yt[keep, j])

    def tool_scores(e):
        return np.stack([models[c].predict_proba(e.numpy())[:, 1] if c in models else np.zeros(len(e))
                         for c in tool_classes], 1)

    return {"phase": phase, "phase_hmm": phase_hmm, "tools": _tool_eval(test, tool_scores, tool_classes),
            "majority_class": _phase_eval(test, lambda e: np.full(len(e), majority)), "train_samples": int(len(y))}


def run_world(args, w: Path, seed: int) -> dict[str, Any]:
    """The whole chain for one world in ``w`` (lectures and surgery of ``args.style`` and ``seed``)."""
    steps = {}
    size = [f"height={args.frame_size}", f"width={args.frame_size}"]
    steps["synth_lectures"] = _job(synth_lectures, "synth_lectures", None, [
        f"out={w / 'lectures'}", f"lectures={max(args.sizes)}", f"seed={seed}", f"style={args.style}",
        f"audio={str(args.audio).lower()}", *size])
    if not (w / "index" / "pairs.jsonl").exists():  # indexed earlier: the same lectures give the same pairs
        steps["lectures_index"] = _job(lectures_index, "lectures_index", None,
                                       [f"root={w / 'lectures'}", f"out={w / 'index'}"])
    ids = list(range(1, args.train_videos + 1)) + list(range(41, 41 + args.test_videos))
    steps["synth_surgery"] = _job(synth_surgery, "synth_surgery", None, [
        f"out={w / 'surgery'}", f"ids={json.dumps(ids)}", f"seed={seed if args.style == 'random' else seed + 100}",
        f"style={args.style}", f"duration_scale={args.duration_scale}", *size])
    defaults = load_config(zero_shot.Config, "zero_shot")
    all_pairs = read_jsonl(w / "index" / "pairs.jsonl")

    def zs(model: Path, out: Path, split: str, extra: list[str] = ()) -> dict:
        return _job(zero_shot, "zero_shot", None, [f"data_root={w / 'surgery'}", f"model={model}", f"out={out}",
                                                   f"split={SPLIT}:{split}", "save_embeddings=true", "plots=false",
                                                   *extra])

    result: dict[str, Any] = {"style": args.style, "seed": seed, "chance_accuracy": 1 / 7, "sizes": {}}
    u = w / "untrained"
    if not (u / "zs_test" / "metrics.json").exists():  # scored earlier: the same model on the same videos
        steps["untrained_zero_shot"] = zs(_untrained(u, args), u / "zs_test", "test", ["expand_k=0"])
    untrained_test = _videos(w / "surgery", u / "zs_test", "test")
    result["untrained"] = _zero_shot_variants(u / "model", None, untrained_test, defaults)
    for n in sorted(args.sizes):
        d = w / args.tag / f"n{n:02d}" if args.tag else w / f"n{n:02d}"
        keep = {f"talk{i:02d}.mp4" for i in range(1, n + 1)}
        pairs = d / "pairs.jsonl"
        if not pairs.exists():
            write_jsonl(pairs, [r for r in all_pairs if r["video"] in keep])
        model = d / "pretrain" / "model"
        if (model / "config.json").exists() and (d / "pretrain" / "metrics.json").exists():  # finished earlier
            s = {"pretrain": {"seconds": 0.0, "summary": json.loads((d / "pretrain" / "metrics.json").read_text())}}
        else:
            s = {"pretrain": _job(pretrain, None, config_dir() / "surgical_pretrain.yaml",
                                  _pretrain_overrides(d, pairs, args, w))}
        for split in ("train", "test"):
            s[f"zero_shot_{split}"] = zs(model, d / f"zs_{split}", split)
        if not args.skip_previous:
            s["zero_shot_previous_defaults"] = zs(model, d / "zs_test_previous", "test", PREVIOUS_DEFAULTS)
        train, test = _videos(w / "surgery", d / "zs_train", "train"), _videos(w / "surgery", d / "zs_test", "test")
        tools = load_prompt_set(prompt_file("cholec80", "tools")).classes
        job = s["zero_shot_test"]["summary"]
        result["sizes"][n] = {
            "pairs": len(read_jsonl(pairs)),
            "job_default": {k: job[k] for k in job if k == "raw" or k.startswith("smoothed_")},
            "variants": _zero_shot_variants(model, pairs, test, defaults),
            "probe": _probe(train, test, tools, defaults),
            "retrieval": {k: job_k for k, job_k in (s["pretrain"]["summary"].get("test") or {}).items()
                          if "recall@5" in k or k.startswith("chance")},
            "seconds": {k: v["seconds"] for k, v in s.items()},
        }
        if not args.skip_previous:
            previous = _videos(w / "surgery", d / "zs_test_previous", "test")
            result["sizes"][n]["job_previous_defaults"] = s["zero_shot_previous_defaults"]["summary"]["raw"]
            result["sizes"][n]["previous_defaults_tools"] = _zero_shot_variants(
                model, None, previous, defaults)["tools"]["absent reference, scale 100"]
        result["sizes"][n]["headline"] = headline(result["sizes"][n], defaults)
        print(json.dumps(jsonable({"seed": seed, "size": n, **result["sizes"][n]["headline"]}), default=str), flush=True)
    result["seconds"] = {k: v["seconds"] for k, v in steps.items()}
    return result


def headline(size: dict[str, Any], defaults) -> dict[str, Any]:
    """The numbers the issue asks for at one size: zero-shot (the defaults, raw and + HMM) against the probe on
    the same embeddings, strict accuracy and macro-F1, their ratio, and tools against prevalence."""
    zs, probe = size["variants"]["phase"], size["probe"]
    raw, hmm = zs["defaults (job settings)"], zs["defaults (job settings) + hmm"]
    tool_key = f"{defaults.tool_reference} reference" + (" + expansion" if defaults.expand_k else "")
    tools = size["variants"]["tools"].get(tool_key) or size["variants"]["tools"][f"{defaults.tool_reference} reference"]
    out = {"zs_acc": raw["strict_accuracy"], "zs_f1": raw["strict_macro_f1"],
           "zs_hmm_acc": hmm["strict_accuracy"], "zs_hmm_f1": hmm["strict_macro_f1"],
           "probe_acc": probe["phase"]["strict_accuracy"], "probe_f1": probe["phase"]["strict_macro_f1"],
           "tool_map": tools["map"], "tool_prevalence_map": tools["prevalence_map"],
           "tools_above_prevalence": tools["tools_above_prevalence"], "probe_tool_map": probe["tools"]["map"]}
    out["ratio_acc"] = out["zs_acc"] / out["probe_acc"]
    out["ratio_f1"] = out["zs_f1"] / out["probe_f1"]
    out["ratio_hmm_acc"] = out["zs_hmm_acc"] / out["probe_acc"]
    out["tool_map_x_prevalence"] = out["tool_map"] / out["tool_prevalence_map"]
    return out


def table(worlds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per size: mean and std over the worlds of every headline number."""
    out = {}
    for n in sorted({n for r in worlds for n in r["sizes"]}):
        rows = [r["sizes"][n]["headline"] for r in worlds if n in r["sizes"]]
        out[n] = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows])),
                      "n": len(rows)} for k in rows[0]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_zs_world"))
    ap.add_argument("--style", default="a", choices=("a", "b", "random"))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="worlds (style random: one world per seed)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8], help="numbers of pretraining lectures (curve)")
    ap.add_argument("--train-videos", type=int, default=6)
    ap.add_argument("--test-videos", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps")
    ap.add_argument("--input-size", type=int, default=112, help="frame size of the model (pretrain and zero-shot)")
    ap.add_argument("--frame-size", type=int, default=224, help="height and width of the synthetic videos")
    ap.add_argument("--duration-scale", type=float, default=1.0, help="surgery videos' phase lengths x this")
    ap.add_argument("--pretrain-set", nargs="*", default=[], help="pretrain settings key=value (a lever)")
    ap.add_argument("--tag", default="", help="folder for the models of this lever (worlds are shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--audio", action="store_true", help="narration audio in the lectures (slower)")
    ap.add_argument("--skip-previous", action="store_true", help="no run with the previous defaults (saves time)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--lectures", type=int, default=None, help="one size: the same as --sizes N (older commands)")
    args = ap.parse_args()
    if args.lectures:
        args.sizes = [args.lectures]
    seeds = args.seeds or [args.seed]
    args.work = args.work / args.style
    worlds = [run_world(args, args.work / f"seed{seed}" if args.seeds else args.work, seed) for seed in seeds]
    result = worlds[0] if not args.seeds else {"style": args.style, "seeds": seeds, "tag": args.tag,
                                                "pretrain_set": args.pretrain_set, "table": table(worlds),
                                                "worlds": worlds}
    text = json.dumps(jsonable(result), indent=2, default=str)
    if args.out:
        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
