"""`medvid demo --quick` end to end in a temporary folder: every artefact a user is pointed at exists and
the headline metrics beat their chance or trivial baselines (slow: a few minutes of 2-core CPU,
docs/BENCHMARKS.md "Demo"; the slow suite runs it). Fast tests: the summary table and its baselines.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    proc = subprocess.run([sys.executable, "-m", "medvid.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout), proc.stderr


@pytest.mark.slow
def test_summary_table_metrics_beat_their_baselines(demo):
    out, summary, stderr = demo
    metrics = {r["metric"].split(" (")[0]: r for r in summary["metrics"]}
    expected = ["view accuracy", "text→study recall@1", "text→study recall@5", "EF MAE, % points",
                "zero-shot phase accuracy", "zero-shot phase macro F1", "zero-shot tool mAP"]
    assert set(expected) <= set(metrics), sorted(metrics)
    assert any(k.endswith(" AUROC") for k in metrics)
    for row in summary["metrics"]:
        if row["metric"].startswith("  "):  # per-section text rows: shown; a small test split may fall below
            continue
        if row["value"] is None:  # a phenotype with one class only in a small test split has no AUROC
            assert row["metric"].endswith(" AUROC"), row
            continue
        assert row["baseline"] is not None and row["beats_baseline"], row
    assert sum(r["value"] is not None for r in summary["metrics"] if r["metric"].endswith(" AUROC")) >= 3
    assert metrics["text→study recall@5"]["baseline"] <= 0.25  # a test split large enough to mean something
    # the readable table, the outputs and the app command end the terminal output
    table = (out / "summary.txt").read_text().strip()
    tail = stderr[-(len(table) + 1000):]  # the table grows with the per-section text rows
    assert "baseline" in tail and f"medvid app --data {out}" in tail and "EF MAE" in tail
    assert table in tail
    costs = json.loads((out / "summary.json").read_text())["stages"]
    assert {"synth_echo", "draft", "zero_shot_tools"} <= set(costs)
    assert all(c["cpu_s"] >= 0 and c["peak_rss_mb"] > 0 for c in costs.values())


@pytest.mark.slow
def test_every_artefact_exists(demo):
    from medvid.report.sr import read_report_sr
    from medvid.utils import read_jsonl

    out, summary, _ = demo
    drafts = out / "echo" / "drafts"
    rows = read_jsonl(drafts / "drafts.jsonl")
    assert len(rows) >= 10 and all(r["status"] == "draft" for r in rows)
    for r in rows:
        assert (drafts / r["text_path"]).read_text().startswith("DRAFT")
        sections, _ = read_report_sr(drafts / r["sr_path"])
        assert sections
    assert (drafts / "evaluation" / "metrics.json").is_file() and (drafts / "evaluation" / "report.md").is_file()
    assert json.loads((out / "echo" / "bank" / "manifest.json").read_text())["calibration"]
    for task in ("phase", "tools"):
        zs = out / "surgery" / f"zero_shot_{task}"
        assert list((zs / "predictions").glob("*.csv")) and (zs / "metrics.json").is_file() and (zs / "report.md").is_file()
    for folder in summary["outputs"].values():
        assert Path(folder).exists(), folder


@pytest.mark.slow
def test_saved_models_carry_complete_cards(demo):
    out, _, _ = demo
    for model in (out / "echo" / "pretrain" / "model", out / "echo" / "view_classifier" / "model",
                  out / "surgery" / "pretrain" / "model"):
        card = (model / "README.md").read_text()
        assert "fill in" not in card.lower() and "## Evaluation" in card and "baseline" in card
        assert "medvid " in card.split("Command:")[1].split("\n")[0]  # the command that reproduces it
        assert "| train |" in card  # data counts per split
        assert str(out) not in card and str(out.resolve()) not in card  # no folder names ride along


def test_baselines_and_table_from_stage_outputs(tmp_path):
    import pandas as pd

    from medvid.pipelines import demo

    p = demo.Paths(tmp_path)
    (p.views).mkdir(parents=True)
    (p.views / "metrics.json").write_text(json.dumps({"test": {"confusion": [[6, 0], [1, 3]]}}))
    (p.zs_phase / "predictions").mkdir(parents=True)
    pd.DataFrame({"gt_index": [0, 0, 0, 1]}).to_csv(p.zs_phase / "predictions" / "v1.csv", index=False)
    pd.DataFrame({"gt_index": [0, 1, 1, -1]}).to_csv(p.zs_phase / "predictions" / "v2.csv", index=False)
    p.zs_tools.mkdir(parents=True)
    (p.zs_tools / "metrics.json").write_text(json.dumps({"results": {"raw": {"prevalence": {"a": 0.2, "b": 0.4,
                                                                                              "c": 0.0}}}}))
    results = {"train_views": {"test": {"accuracy": 0.9, "n": 10}},
               "pretrain_echo": {"test": {"n": 20, "text_to_video_recall@1": 0.3, "text_to_video_recall@5": 0.2,
                                          "chance_recall@5": 0.25}},
               "evaluate_drafts": {"studies": 20, "ef_mae": 9.0, "ef_mae_train_mean": 8.0, "reduced_ef_auroc": 0.8,
                                   "tricuspid_regurgitation_auroc": None},
               "zero_shot_phase": {"raw": {"strict_accuracy": 0.7, "strict_macro_f1": 0.6}},
               "zero_shot_tools": {"raw": {"map": 0.5}}}
    rows = {r["metric"].split(" (")[0]: r for r in demo.metrics_table(results, p)}
    assert rows["view accuracy"]["baseline"] == 0.6                      # 6 of 10 test loops are class 0
    assert rows["text→study recall@1"]["baseline"] == 0.05 and rows["text→study recall@1"]["beats_baseline"]
    assert rows["text→study recall@5"]["beats_baseline"] is False        # 0.2 < chance 0.25: shown as NO
    assert rows["EF MAE, % points"]["beats_baseline"] is False           # lower is better, 9 > 8
    assert rows["tricuspid regurgitation AUROC"]["beats_baseline"] is None
    # majority phase 0 over both videos' labelled seconds: video 1 all but one right, video 2 one of three
    assert rows["zero-shot phase accuracy"]["baseline"] == pytest.approx((3 / 4 + 1 / 3) / 2, abs=1e-3)
    assert rows["zero-shot tool mAP"]["baseline"] == pytest.approx(0.3)  # tools present: mean prevalence
    text = demo.render({"out": str(tmp_path), "quick": True, "metrics": list(rows.values()),
                        "total": {"wall_s": 1, "cpu_s": 1, "peak_rss_mb": 1}, "outputs": demo.outputs(p),
                        "app": "medvid app --data X"})
    assert "NO (chance)" in text and "n/a" in text and text.rstrip().endswith("medvid app --data X")


def test_table_shows_draft_text_quality_per_section_beside_a_random_report():
    from medvid.pipelines import demo
    from medvid.report.evaluate import headline

    def agreement(f1, finding):
        return {"token_f1": f1, "finding_agreement": finding}

    metrics = {"studies": 3, "studies_in_bank": 0, "baseline_studies": 5, "notes": [], "sections": {
        "draft": {**agreement(0.8, 0.9), "sections": {"IVC": {**agreement(0.6, 1.0), "n": 3},
                                                      "Mitral Valve": {**agreement(0.9, 0.8), "n": 3}}},
        "baseline_random_neighbour": {**agreement(0.7, 0.9), "sections": {"IVC": agreement(0.65, 1.0),
                                                                           "Mitral Valve": agreement(0.5, 0.4)}}}}
    table = demo.metrics_table({"evaluate_drafts": headline(metrics)}, demo.Paths(Path(".")))
    rows = {r["metric"].split(" (")[0].strip(): r for r in table}
    assert rows["draft text token F1"]["value"] == 0.8 and rows["draft text token F1"]["baseline"] == 0.7
    assert rows["draft text finding agreement"]["beats_baseline"] is True  # 0.9 = 0.9: at the baseline counts
    assert rows["token F1: IVC"]["beats_baseline"] is False and rows["token F1: Mitral Valve"]["beats_baseline"]
    assert rows["finding agreement: IVC"]["baseline"] == 1.0 and rows["finding agreement: IVC"]["beats_baseline"]


def test_unknown_stage_override_is_refused_before_any_work(tmp_path):
    from medvid.config import load_config
    from medvid.errors import MedvidError
    from medvid.pipelines import demo

    cfg = load_config(demo.Config, "demo", None, [f"out={tmp_path / 'o'}", "stage_overrides={pretrain: [x=1]}"])
    with pytest.raises(MedvidError, match="unknown stages"):
        demo.run(cfg)
    assert not (tmp_path / "o").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    from medvid.config import load_config
    from medvid.errors import MedvidError
    from medvid.pipelines import demo

    out = tmp_path / "o"
    (out / "stages").mkdir(parents=True)
    (out / "stages" / "synth_echo.json").write_text(json.dumps({"settings": ["studies=120"], "cost": {}}))
    with pytest.raises(MedvidError, match="other settings"):
        demo.run(load_config(demo.Config, "demo", None, [f"out={out}", "quick=true"]))
    assert sorted(p.name for p in out.rglob("*")) == ["stages", "synth_echo.json"]  # nothing else was run


def test_surgical_world_is_the_untuned_style_by_default(tmp_path):
    """The demo's surgical stages run in world B (no zero-shot default was tuned on it) unless asked."""
    from medvid.config import load_config
    from medvid.pipelines import demo

    p = demo.Paths(tmp_path)
    for overrides, style in (([], "b"), (["surgical_style=a"], "a")):
        cfg = load_config(demo.Config, "demo", None, [f"out={tmp_path}", *overrides])
        plan = {s.name: s.overrides for s in demo.stages(cfg, p)}
        assert f"style={style}" in plan["synth_lectures"] and f"style={style}" in plan["synth_surgery"]
    rows = demo.metrics_table({"zero_shot_tools": {"raw": {"map": 0.5}}}, p, "b")
    assert rows[0]["metric"] == "zero-shot tool mAP (world B)"
