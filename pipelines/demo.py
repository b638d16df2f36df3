"""``medvid demo [--quick]``: the whole product end to end on synthetic data, as a user would chain the commands.

Echo: synth echo → ingest → view classifier → study/report pretraining → report bank (training studies)
→ threshold calibration (validation) → drafts of the test studies (text + DICOM SR) → draft evaluation.
Surgery: synth lectures → lecture pairs → clip/speech pretraining → synth Cholec80-layout videos
→ zero-shot phase and tool recognition with the pretrained model, in the surgical world style
``surgical_style`` (default ``b``: the shifted world no zero-shot default was tuned on, ``docs/zero_shot.md``).

Each stage is the same job the CLI runs, with its shipped config plus the overrides below; a finished
stage leaves ``OUT/stages/<stage>.json`` (its summary, settings, wall and CPU seconds, peak memory) and is
skipped on a re-run (resume); a re-run with other settings (e.g. ``--quick`` into a full run's folder) is
refused. The demo ends with one table of headline metrics, each beside its chance or
trivial baseline (``OUT/summary.txt``; ``OUT/summary.json`` adds each stage's cost).
"""
from __future__ import annotations

import importlib
import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from medvid.config import load_config, setting
from medvid.errors import MedvidError
from medvid.utils import atomic_write_text

log = logging.getLogger("medvid")


@dataclass
class Sizes:
    """How much data and training each part gets."""

    echo_studies: int = setting(120, "synthetic echo studies")
    echo_split: list[float] = setting(help="train / val / test shares, by study", factory=lambda: [0.45, 0.15, 0.4])
    lectures: int = setting(12, "synthetic surgical lectures (pretraining data)")
    surgery_videos: int = setting(4, "synthetic surgical videos for zero-shot and probe (numbered from 49: the "
                                     "Cholec80 test split)")
    echo_steps: int = setting(150, "optimizer steps of echo video-report pretraining")
    surgical_steps: int = setting(200, "optimizer steps of surgical clip-speech pretraining")
    view_steps: int = setting(200, "optimizer steps of the view classifier")


@dataclass
class Config:
    out: str = setting("demo_out", "output folder (a re-run resumes: finished stages are skipped)")
    seed: int = setting(0, "random seed of every stage")
    quick: bool = setting(False, "smoke run: quick_sizes and quick_overrides instead")
    surgical_style: str = setting("b", "synthetic surgical world: b = the shifted style no zero-shot default was "
                                       "tuned on; a = the tuned one; random = world `seed` drawn from wide "
                                       "distributions (docs/zero_shot.md: report seeds)")
    sizes: Sizes = setting(factory=Sizes)
    quick_sizes: Sizes = setting(factory=Sizes)
    stage_overrides: dict[str, list[str]] = setting(
        help="extra key=value overrides per stage, e.g. {pretrain_echo: [train.lr=0.001]}", factory=dict)
    quick_overrides: dict[str, list[str]] = setting(help="with quick=true: overrides added to stage_overrides",
                                                    factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    job: str                    # medvid.pipelines.<job>
    config: str                 # shipped config name
    overrides: list[str]


class Paths:
    """Where each stage writes, under OUT."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.echo, self.surgery = out / "echo", out / "surgery"
        self.synth, self.ingest = self.echo / "synth", self.echo / "ingest"
        self.dicom = self.synth / "dicom"  # synth echo writes DICOM under OUT/dicom and the CSVs beside it
        self.views = self.echo / "view_classifier"
        self.pretrain = self.echo / "pretrain"
        self.bank, self.drafts = self.echo / "bank", self.echo / "drafts"
        self.lectures, self.pairs = self.surgery / "lectures", self.surgery / "pairs"
        self.surgical, self.cholec = self.surgery / "pretrain", self.surgery / "cholec80"
        self.zs_phase, self.zs_tools = self.surgery / "zero_shot_phase", self.surgery / "zero_shot_tools"


def stages(cfg: Config, p: Paths) -> list[Stage]:
    """The demo's stages in run order."""
    s = cfg.quick_sizes if cfg.quick else cfg.sizes
    seed = f"seed={cfg.seed}"
    model, views = p.pretrain / "model", p.views / "model"
    # bank, calibration and drafting reuse the frame features pretraining cached (no loop is decoded twice)
    encode = [f"model={model}", f"views={views}", f"dicom_root={p.dicom}",
              f"encoding.feature_cache={p.pretrain / 'cache' / 'echo'}", "encoding.num_workers=0"]
    return [
        Stage("synth_echo", "synth_echo", "synth_echo", [
            f"out={p.synth}", f"studies={s.echo_studies}", f"split_fractions={json.dumps(list(s.echo_split))}", seed]),
        Stage("ingest", "ingest", "ingest", [
            f"dicom_root={p.dicom}", f"out={p.ingest}", f"reports={p.synth / 'reports.csv'}",
            f"labels={p.synth / 'labels.csv'}", f"views={p.synth / 'views.csv'}"]),
        Stage("train_views", "train_views", "view_classifier", [
            f"ingest_dir={p.ingest}", f"dicom_root={p.dicom}", f"out={p.views}",
            f"train.max_steps={s.view_steps}", f"train.seed={cfg.seed}"]),
        Stage("pretrain_echo", "pretrain", "echo_pretrain", [
            f"echo.ingest_dir={p.ingest}", f"echo.dicom_root={p.dicom}", f"out={p.pretrain}",
            f"train.max_steps={s.echo_steps}", f"train.seed={cfg.seed}"]),
        Stage("bank_build", "bank", "bank", [
            "action=build", f"input={p.ingest}", f"bank={p.bank}", "split=train", *encode]),
        Stage("bank_calibrate", "bank", "bank", [
            "action=calibrate", f"input={p.ingest}", f"bank={p.bank}", "split=val", *encode]),
        Stage("draft", "draft", "draft", [
            f"input={p.ingest}", f"bank={p.bank}", f"out={p.drafts}", "split=test", *encode]),
        Stage("evaluate_drafts", "evaluate", "evaluate", [f"drafts={p.drafts}", f"ingest={p.ingest}"]),
        Stage("synth_lectures", "synth_lectures", "synth_lectures", [
            f"out={p.lectures}", f"lectures={s.lectures}", seed, f"style={cfg.surgical_style}"]),
        Stage("lectures_index", "lectures_index", "lectures_index", [f"root={p.lectures}", f"out={p.pairs}", seed]),
        Stage("pretrain_surgical", "pretrain", "surgical_pretrain", [
            f"lectures.pairs={p.pairs / 'pairs.jsonl'}", f"lectures.root={p.lectures}", f"out={p.surgical}",
            f"train.max_steps={s.surgical_steps}", f"train.seed={cfg.seed}"]),
        # Held-out surgery videos numbered as the Cholec80 test split (49-80), so the named split applies.
        Stage("synth_surgery", "synth_surgery", "synth_surgery", [
            f"out={p.cholec}", f"videos={s.surgery_videos}", "first_id=49",
            f"seed={cfg.seed if cfg.surgical_style == 'random' else cfg.seed + 1}",  # random: the lectures' world
            f"style={cfg.surgical_style}"]),
        Stage("zero_shot_phase", "zero_shot", "zero_shot", [
            "task=phase", f"data_root={p.cholec}", f"model={p.surgical / 'model'}", f"out={p.zs_phase}"]),
        Stage("zero_shot_tools", "zero_shot", "zero_shot", [
            "task=tools", f"data_root={p.cholec}", f"model={p.surgical / 'model'}", f"out={p.zs_tools}"]),
    ]


# --------------------------------------------------------------------------- cost of a stage


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset (VmHWM), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (decoders, workers, encoders)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_stage(stage: Stage, extra: list[str]) -> dict[str, Any]:
    module = importlib.import_module(f"medvid.pipelines.{stage.job}")
    stage_cfg = load_config(module.Config, stage.config, None, stage.overrides + extra)
    _reset_peak_rss()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = module.run(stage_cfg) or {}
    cost = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu_seconds() - cpu, 1),
            "peak_rss_mb": round(_peak_rss_mb())}
    return {**result, "cost": cost}


# --------------------------------------------------------------------------- job


def run(cfg: Config) -> dict[str, Any]:
    p = Paths(Path(cfg.out))
    plan = stages(cfg, p)
    overrides = {k: list(v) for k, v in cfg.stage_overrides.items()}
    if cfg.quick:
        for k, v in cfg.quick_overrides.items():
            overrides.setdefault(k, []).extend(v)
    unknown = sorted(set(overrides) - {s.name for s in plan})
    if unknown:
        raise MedvidError(f"stage_overrides name unknown stages {unknown}; stages: {[s.name for s in plan]}")
    results: dict[str, Any] = {}
    for i, stage in enumerate(plan, 1):
        done = p.out / "stages" / f"{stage.name}.json"
        settings = stage.overrides + overrides.get(stage.name, [])
        if done.exists():
            results[stage.name] = json.loads(done.read_text())
            if results[stage.name].get("settings") != settings:
                raise MedvidError(f"{p.out} holds a demo run with other settings (stage {stage.name}); "
                                  "give another --out, or delete that folder to start afresh")
            log.info("demo [%d/%d] %s: already done (delete %s to redo)", i, len(plan), stage.name, done)
            continue
        log.info("demo [%d/%d] %s", i, len(plan), stage.name)
        results[stage.name] = {**_run_stage(stage, overrides.get(stage.name, [])), "settings": settings}
        atomic_write_text(done, json.dumps(results[stage.name], indent=2, default=str))
        c = results[stage.name]["cost"]
        log.info("demo [%d/%d] %s done: %.0f s wall, %.0f s CPU, peak %d MB", i, len(plan), stage.name,
                 c["wall_s"], c["cpu_s"], c["peak_rss_mb"])
    summary = {"out": str(p.out), "quick": cfg.quick, "metrics": metrics_table(results, p, cfg.surgical_style), "total": _total(results),
               "outputs": outputs(p), "app": f"medvid app --data {p.out} --dicom-root {p.dicom}"}
    stage_costs = {k: v["cost"] for k, v in results.items()}
    atomic_write_text(p.out / "summary.json", json.dumps({**summary, "stages": stage_costs}, indent=2, default=str))
    atomic_write_text(p.out / "summary.txt", render(summary))
    return summary  # stage costs stay in OUT/summary.json


def _total(results: dict[str, Any]) -> dict[str, float]:
    costs = [r["cost"] for r in results.values()]
    return {"wall_s": round(sum(c["wall_s"] for c in costs), 1), "cpu_s": round(sum(c["cpu_s"] for c in costs), 1),
            "peak_rss_mb": max(c["peak_rss_mb"] for c in costs),
            # the largest finished child process of this run (decoder, encoder or worker), not per stage
            "largest_child_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


# --------------------------------------------------------------------------- the summary


def _metric(name: str, value: Optional[float], baseline: Optional[float], baseline_name: str,
            higher_is_better: bool = True, ties: bool = False) -> dict[str, Any]:
    """One table row; ``beats_baseline`` is strict, or ``value >= baseline`` with ``ties`` (text scores, where
    both may be perfect)."""
    beats = None
    if value is not None and baseline is not None:
        beats = bool(value >= baseline if ties else value > baseline if higher_is_better else value < baseline)
    return {"metric": name, "value": _r(value), "baseline": _r(baseline), "baseline_name": baseline_name,
            "higher_is_better": higher_is_better, "beats_baseline": beats}


def _r(x: Any) -> Optional[float]:
    return None if x is None else round(float(x), 3)


def metrics_table(results: dict[str, Any], p: Paths, style: Optional[str] = None) -> list[dict[str, Any]]:
    """Headline metrics of the stages' summaries, each beside its chance or trivial baseline; zero-shot rows
    name the surgical world ``style`` when given."""
    world = f" (world {style.upper()})" if style else ""
    rows: list[dict[str, Any]] = []
    views = results.get("train_views", {}).get("test", {})
    if views:
        rows.append(_metric(f"view accuracy ({views.get('n')} test loops)", views.get("accuracy"),
                            majority_view_baseline(p.views / "metrics.json"), "majority view"))
    test = results.get("pretrain_echo", {}).get("test", {})
    if test:
        n = test.get("n") or 0
        rows.append(_metric(f"text→study recall@1 ({n} test studies)", test.get("text_to_video_recall@1"),
                            1 / n if n else None, "chance"))
        rows.append(_metric("text→study recall@5", test.get("text_to_video_recall@5"), test.get("chance_recall@5"),
                            "chance"))
    ev = results.get("evaluate_drafts", {})
    if "ef_mae" in ev:
        rows.append(_metric(f"EF MAE, % points ({ev.get('studies')} drafted studies)", ev["ef_mae"],
                            ev.get("ef_mae_train_mean"), "training mean", higher_is_better=False))
    for key in sorted(k for k in ev if k.endswith("_auroc")):
        rows.append(_metric(f"{key[:-6].replace('_', ' ')} AUROC", ev[key], 0.5, "chance"))
    rows += text_rows(ev)
    phase = results.get("zero_shot_phase", {}).get("raw")
    if phase:
        base = majority_phase_baseline(p.zs_phase / "predictions")
        rows.append(_metric(f"zero-shot phase accuracy{world}", phase["strict_accuracy"], base.get("accuracy"),
                            "majority phase"))
        rows.append(_metric(f"zero-shot phase macro F1{world}", phase["strict_macro_f1"], base.get("macro_f1"),
                            "majority phase"))
    tools = results.get("zero_shot_tools", {}).get("raw")
    if tools:
        rows.append(_metric(f"zero-shot tool mAP{world}", tools["map"], tool_prevalence_baseline(p.zs_tools / "metrics.json"),
                            "random scorer = prevalence"))
    return rows


def text_rows(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Draft text quality beside a random training report's text: token F1 and finding agreement, macro over
    sections and per section (at or above the baseline counts)."""
    rows = []
    for metric, label in (("token_f1", "token F1"), ("finding_agreement", "finding agreement")):
        if metric in ev:
            rows.append(_metric(f"draft text {label} (macro over sections)", ev[metric],
                                ev.get(f"{metric}_random_neighbour"), "random report's text", ties=True))
        for section, v in ev.get("section_text", {}).items():
            rows.append(_metric(f"  {label}: {section}", v[metric], v[f"{metric}_random_neighbour"],
                                "random report's text", ties=True))
    return rows


def majority_view_baseline(metrics_json: Path) -> Optional[float]:
    """Test accuracy of always predicting the most frequent test view (from the saved confusion matrix)."""
    if not metrics_json.is_file():
        return None
    rows = [sum(r) for r in json.loads(metrics_json.read_text()).get("test", {}).get("confusion", [])]
    return max(rows) / sum(rows) if rows and sum(rows) else None


def majority_phase_baseline(predictions: Path) -> dict[str, float]:
    """Strict accuracy / macro-F1 of always predicting the most frequent ground-truth phase of these videos."""
    import numpy as np
    import pandas as pd

    from medvid.metrics import strict_phase_metrics

    gts = [g for g in (pd.read_csv(f)["gt_index"].to_numpy() for f in sorted(predictions.glob("*.csv"))
                       if "gt_index" in pd.read_csv(f, nrows=0).columns) if (g >= 0).any()]
    if not gts:
        return {}
    gts = [g[g >= 0] for g in gts]
    majority = np.bincount(np.concatenate(gts)).argmax()
    m = strict_phase_metrics([(g, np.full_like(g, majority)) for g in gts])
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def tool_prevalence_baseline(metrics_json: Path) -> Optional[float]:
    """mAP of a random scorer: the mean prevalence of the tools present (each tool's AP is its prevalence)."""
    if not metrics_json.is_file():
        return None
    prevalence = [v for v in json.loads(metrics_json.read_text())["results"]["raw"]["prevalence"].values() if v]
    return sum(prevalence) / len(prevalence) if prevalence else None


def outputs(p: Paths) -> dict[str, str]:
    """Where the demo wrote what a user looks at."""
    return {"echo DICOM (synthetic)": str(p.dicom), "ingest tables": str(p.ingest),
            "view classifier": str(p.views / "model"), "echo video–report model": str(p.pretrain / "model"),
            "report bank": str(p.bank), "drafts (text + DICOM SR)": str(p.drafts / "drafts"),
            "draft evaluation": str(p.drafts / "evaluation" / "report.md"),
            "surgical video–speech model": str(p.surgical / "model"),
            "zero-shot phase": str(p.zs_phase), "zero-shot tools": str(p.zs_tools),
            "stage costs": str(p.out / "stages")}


def render(summary: dict[str, Any]) -> str:
    """The summary as text: metrics vs baselines, stage costs, outputs, the command that opens the app."""
    rows = summary["metrics"]
    w = max([len(r["metric"]) for r in rows] + [6])
    lines = [f"medvid demo{' --quick' if summary['quick'] else ''}: synthetic data, results",
             "", f"{'metric':<{w}}  {'value':>7}  {'baseline':>8}  beats", "-" * (w + 36)]
    for r in rows:
        v = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        b = "n/a" if r["baseline"] is None else f"{r['baseline']:.3f}"
        mark = {True: "yes", False: "NO", None: "?"}[r["beats_baseline"]]
        lines.append(f"{r['metric']:<{w}}  {v:>7}  {b:>8}  {mark} ({r['baseline_name']})")
    t = summary["total"]
    lines += ["", "n/a: undefined on this test split (e.g. one class only); NO: does not beat its baseline (text rows: "
              "below it).",
              f"time: {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU (user + system); peak memory "
              f"{t['peak_rss_mb']} MB (per stage: {summary['out']}/summary.json)", "", "outputs:"]
    lines += [f"  {k:<30} {v}" for k, v in summary["outputs"].items()]
    lines += ["", "open the review app on these results:", f"  {summary['app']}", ""]
    return "\n".join(lines)
