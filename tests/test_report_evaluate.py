"""`medvid evaluate drafts`: metrics of drafts (contract: docs/drafting_contract.md) beside baselines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medvid.cli import app
from medvid.errors import MedvidError
from medvid.io.reports import parse_sections
from medvid.report.evaluate import evaluate_drafts, extract_finding, token_f1
from medvid.synth.echo import report_sections, sample_findings
from medvid.utils import write_jsonl

BINARY = ("reduced_ef", "lv_dilation", "pericardial_effusion", "mitral_regurgitation")


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory) -> Path:
    """An ingest-like folder: 40 studies (30 train, 10 test) with synthetic reports and labels."""
    out = tmp_path_factory.mktemp("ingest")
    rng = np.random.default_rng(3)
    reports, labels = [], []
    for i in range(40):
        f = sample_findings(rng)
        sections = report_sections(f, rng)
        key = f"st_{i:016x}"
        text = "Patient: Jane Roe  MRN: P1234567\n" + "\n".join(f"{k}: {v}" for k, v in sections.items())
        reports.append({"study_key": key, "report": text, "split": "train" if i < 30 else "test"})
        labels.append({"study_key": key, **{k: v for k, v in f.labels().items() if k == "ef" or k in BINARY}})
    pd.DataFrame(reports).to_csv(out / "reports.csv", index=False)
    pd.DataFrame(labels).to_csv(out / "labels.csv", index=False)
    return out


def _drafts(ingest_dir: Path, out: Path, mode: str) -> Path:
    """drafts.jsonl for the test studies: ``perfect`` (true text and labels) or ``shuffled`` (another test study's)."""
    reports = pd.read_csv(ingest_dir / "reports.csv")
    labels = pd.read_csv(ingest_dir / "labels.csv").set_index("study_key")
    test = reports[reports["split"] == "test"].reset_index(drop=True)
    rows = []
    for i, key in enumerate(test["study_key"]):
        source = key if mode == "perfect" else test["study_key"][(i + 3) % len(test)]
        sections = parse_sections(test.set_index("study_key").at[source, "report"])
        lab = labels.loc[source]
        rows.append({
            "study_key": key, "status": "draft", "in_bank": False,
            "sections": {name: {"text": text, "neighbours": [{"study_key": source, "similarity": 0.9}], "videos": []}
                         for name, text in sections.items()},
            "phenotypes": {"ef": {"kind": "numeric", "value": float(lab["ef"]), "method": "knn", "k": 50, "n": 50},
                           **{b: {"kind": "binary", "score": float(lab[b]), "threshold": 0.5, "call": int(lab[b]),
                                  "method": "knn", "k": 50, "n": 50} for b in BINARY}},
            "findings": {}, "videos": [], "provenance": {}, "text_path": f"drafts/{key}.txt", "sr_path": None})
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "drafts.jsonl", rows)
    return out


def _with_train_drafts(ingest_dir: Path, out: Path, flag: bool) -> Path:
    """The perfect test drafts plus perfect drafts of the 30 train studies (the bank's): ``in_bank`` set when
    ``flag``, else left out as drafts written before that field, whose nearest neighbour was the study itself."""
    _drafts(ingest_dir, out, "perfect")
    rows = [json.loads(line) for line in (out / "drafts.jsonl").read_text().splitlines()]
    reports = pd.read_csv(ingest_dir / "reports.csv")
    for key in reports.loc[reports["split"] == "train", "study_key"]:
        row = json.loads(json.dumps(rows[0]))
        row["study_key"] = key
        if flag:
            row["in_bank"] = True
        else:
            del row["in_bank"]
            for section in row["sections"].values():
                section["neighbours"] = [{"study_key": key, "similarity": 1.0}]
        rows.append(row)
    write_jsonl(out / "drafts.jsonl", rows)
    return out


@pytest.mark.parametrize("flag", [True, False])
def test_drafts_of_bank_studies_are_not_scored_and_said_so(ingest_dir, tmp_path, flag):
    """Issue 27 item 3: drafting with split="" drafts the bank's own studies; evaluate scores only the others,
    says how many it left out (output and stderr) and keeps the bank's studies for the baselines."""
    out = _with_train_drafts(ingest_dir, tmp_path / "d", flag)
    m = evaluate_drafts(out / "drafts.jsonl", ingest_dir)
    assert m["studies"] == 10 and m["studies_in_bank"] == 30 and m["baseline_studies"] == 30
    assert "30 drafted studies are in the bank" in m["notes"][0]
    assert m["phenotypes"]["ef"]["baseline_train_mean"]["mae"] > 5
    result = CliRunner().invoke(app, ["evaluate", "drafts", str(out), "--ingest", str(ingest_dir)])
    assert result.exit_code == 0, result.output
    assert "30 drafted studies are in the bank" in result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["studies"] == 10 and summary["studies_in_bank"] == 30 and summary["notes"]
    assert "**Note: 30 drafted studies are in the bank" in (out / "evaluation" / "report.md").read_text()


def test_drafts_all_in_the_bank_are_refused(ingest_dir, tmp_path):
    out = _with_train_drafts(ingest_dir, tmp_path / "d", True)
    rows = [json.loads(line) for line in (out / "drafts.jsonl").read_text().splitlines()]
    write_jsonl(out / "drafts.jsonl", [r for r in rows if r["in_bank"]])
    with pytest.raises(MedvidError, match=r"all 30 drafted studies are in the bank.*split=test"):
        evaluate_drafts(out / "drafts.jsonl", ingest_dir)


def test_baselines_without_studies_to_draw_on_are_undefined_and_explained(ingest_dir, tmp_path):
    """Every study drafted (none in the bank): no study is left for the baselines, which are undefined (null,
    "–"), not 0.0, and the report says why."""
    out = _with_train_drafts(ingest_dir, tmp_path / "d", True)
    rows = [json.loads(line) for line in (out / "drafts.jsonl").read_text().splitlines()]
    write_jsonl(out / "drafts.jsonl", [{**r, "in_bank": False} for r in rows])
    result = CliRunner().invoke(app, ["evaluate", "drafts", str(out), "--ingest", str(ingest_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["baseline_studies"] == 0 and summary["token_f1_random_neighbour"] is None
    assert summary["ef_mae_train_mean"] is None and "baselines" in summary["notes"][0]
    assert "every baseline is undefined" in result.stderr
    report = (out / "evaluation" / "report.md").read_text()
    assert "every baseline is undefined" in report and "– = undefined" in report


def test_perfect_drafts_score_one_and_beat_every_baseline(ingest_dir, tmp_path):
    m = evaluate_drafts(_drafts(ingest_dir, tmp_path / "p", "perfect") / "drafts.jsonl", ingest_dir)
    assert m["studies"] == 10 and m["baseline_studies"] == 30
    ef = m["phenotypes"]["ef"]
    assert ef["draft"]["mae"] == 0 and ef["draft"]["r2"] == 1.0 and ef["mae_reduction_vs_train_mean"] == 1.0
    assert ef["mae_reduction_ci95"] == [1.0, 1.0] and ef["methods"] == ["knn"]
    assert ef["baseline_train_mean"]["mae"] > 5 and ef["baseline_random_neighbour"]["mae"] > 5
    for b in BINARY:
        p = m["phenotypes"][b]
        assert p["draft"]["positives"] == round(p["draft"]["prevalence"] * p["draft"]["n"])
        if 0 < p["draft"]["prevalence"] < 1:
            assert p["draft"]["auroc"] == 1.0 and p["baseline_prevalence"]["auroc"] == 0.5
            assert p["draft"]["auroc_ci95"] == [1.0, 1.0]
    s = m["sections"]
    assert s["draft"]["token_f1"] == 1.0 and s["draft"]["finding_agreement"] == 1.0
    assert s["baseline_random_neighbour"]["token_f1"] < 0.95
    assert s["baseline_random_neighbour"]["finding_agreement"] < 0.9


def test_mismatched_drafts_score_lower(ingest_dir, tmp_path):
    perfect = evaluate_drafts(_drafts(ingest_dir, tmp_path / "p", "perfect") / "drafts.jsonl", ingest_dir)
    wrong = evaluate_drafts(_drafts(ingest_dir, tmp_path / "w", "shuffled") / "drafts.jsonl", ingest_dir)
    assert wrong["sections"]["draft"]["token_f1"] < perfect["sections"]["draft"]["token_f1"]
    assert wrong["sections"]["draft"]["finding_agreement"] < 1.0
    assert wrong["phenotypes"]["ef"]["draft"]["mae"] > 1.0
    # the same seed gives the same random-neighbour baseline
    again = evaluate_drafts(tmp_path / "w" / "drafts.jsonl", ingest_dir)
    assert again["sections"]["baseline_random_neighbour"] == wrong["sections"]["baseline_random_neighbour"]


def test_missing_section_scores_zero(ingest_dir, tmp_path):
    out = _drafts(ingest_dir, tmp_path / "p", "perfect")
    rows = [json.loads(line) for line in (out / "drafts.jsonl").read_text().splitlines()]
    for row in rows:
        row["sections"].pop("Mitral Valve", None)
    write_jsonl(out / "drafts.jsonl", rows)
    s = evaluate_drafts(out / "drafts.jsonl", ingest_dir)["sections"]["draft"]
    assert s["sections"]["Mitral Valve"]["token_f1"] == 0.0 and s["sections"]["Left Ventricle"]["token_f1"] == 1.0


def test_text_measures():
    assert token_f1("Moderate mitral regurgitation.", "Moderate mitral regurgitation.") == 1.0
    assert 0 < token_f1("Mild mitral regurgitation.", "Moderate mitral regurgitation.") < 1
    assert token_f1("", "x") == 0.0
    same = [("No mitral regurgitation.", "The mitral valve is normal without regurgitation."),
            ("There is a small pericardial effusion.", "Small circumferential pericardial effusion."),
            ("The left atrium is dilated.", "Left atrial enlargement."),
            ("The interatrial septum appears intact.", "No atrial septal defect is seen.")]
    for a, b in same:
        assert extract_finding(a) == extract_finding(b), (a, b)
    different = [("Mild mitral regurgitation.", "Moderate mitral regurgitation."),
                 ("No pericardial effusion.", "There is a moderate pericardial effusion."),
                 ("The left ventricle is normal in size.", "The left ventricle is dilated.")]
    for a, b in different:
        assert extract_finding(a) != extract_finding(b), (a, b)


def test_cli_writes_metrics_and_report(ingest_dir, tmp_path):
    out = _drafts(ingest_dir, tmp_path / "p", "perfect")
    result = CliRunner().invoke(app, ["evaluate", "drafts", str(out), "--ingest", str(ingest_dir)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["phenotypes"]["ef"]["draft"]["mae"] == 0
    report = (out / "evaluation" / "report.md").read_text()
    assert "random neighbour" in report and "ef" in report
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ef_mae"] == 0 and summary["token_f1"] == 1.0 and "token_f1_random_neighbour" in summary


def test_bad_inputs_are_clear_errors(ingest_dir, tmp_path):
    with pytest.raises(MedvidError, match="drafts file not found"):
        evaluate_drafts(tmp_path / "none.jsonl", ingest_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"study_key": "st_1", "sections": {}}\nnot json\n')
    with pytest.raises(MedvidError, match=r"bad.jsonl:2"):
        evaluate_drafts(bad, ingest_dir)
    result = CliRunner().invoke(app, ["evaluate", "drafts", str(tmp_path), "--ingest", str(ingest_dir)])
    assert result.exit_code == 1 and "no drafts.jsonl" in result.output


def test_undefined_metrics_are_json_null(ingest_dir, tmp_path):
    out = _drafts(ingest_dir, tmp_path / "p", "perfect")
    rows = [json.loads(line) for line in (out / "drafts.jsonl").read_text().splitlines()]
    for row in rows:
        row["phenotypes"]["ef"]["value"] = None  # no labelled neighbour
    write_jsonl(out / "drafts.jsonl", rows)
    result = CliRunner().invoke(app, ["evaluate", "drafts", str(out), "--ingest", str(ingest_dir)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["phenotypes"]["ef"]["draft"] == {"mae": None, "rmse": None, "r2": None, "n": 0}


def test_bootstrap_intervals_bracket_the_estimate():
    from medvid.report.evaluate import _reduction_ci, binary_metrics

    rng = np.random.default_rng(1)
    y = rng.uniform(20, 70, 40)
    pred, base = y + rng.normal(0, 5, 40), np.full(40, y.mean())
    lo, hi = _reduction_ci(y, pred, base)
    point = 1 - np.abs(y - pred).mean() / np.abs(y - base).mean()
    assert lo < point < hi and hi - lo > 0.05
    labels = (y > 45).astype(float)
    m = binary_metrics(labels, y + rng.normal(0, 15, 40), boot=200)
    assert m["positives"] == int(labels.sum()) and m["auroc_ci95"][0] < m["auroc"] < m["auroc_ci95"][1]
    assert "auroc_ci95" not in binary_metrics(np.ones(5), np.arange(5.0), boot=200)  # one class: no interval
