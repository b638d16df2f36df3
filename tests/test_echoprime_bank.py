"""EchoPrime's candidate bank through medvid: stand-in files in the publisher's layout, imported with
``medvid import echoprime-bank``, drafted and scored against a reference written here from the facts of
EchoPrime's code (phrase decoding, section extraction, MIL-weighted mean, next candidate when the section is
missing, k = 50 NaN-mean phenotypes indexed as its predict_metrics does)."""
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medvid.config import load_config
from medvid.errors import MedvidError
from medvid.io.safe_pickle import load_plain
from medvid.report.echoprime_bank import EchoPrimeBank, is_echoprime_bank
from medvid.report.echoprime_draft import EchoPrimeDrafter
from medvid.report.encode import EncodedStudy
from medvid.vocab import ECHO_VIEWS

DIM = 512
N = 300
PHRASES = {
    "Left Ventricle": {"size": ["Normal left ventricular size.", "Mildly dilated left ventricle."],
                       "ef": ["Left ventricular ejection fraction is <numerical>%."]},
    "Right Ventricle": {"size": ["Normal right ventricular size.", "Right ventricle is <string>."]},
    "Left Atrium": {"size": ["Normal left atrial size.", "The left atrium is dilated."]},
    "Aortic Valve": {"morph": ["Trileaflet aortic valve."], "area": ["Aortic valve area <numerical> cm2."]},
}
SECTIONS = ["Left Ventricle", "Right Ventricle", "Left Atrium", "Aortic Valve"]
S2P = {"Left Ventricle": ["ejection_fraction", "impella"], "Left Atrium": ["left_atrium_dilation"]}
MODES = {"ejection_fraction": "regression", "impella": "binary", "left_atrium_dilation": "binary"}


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _reports(rng: np.random.Generator) -> list[list[tuple]]:
    """Phrase-encoded reports; the Aortic Valve section is rare, so drafting must skip to later candidates."""
    out = []
    for _ in range(N):
        ids = []
        for s, name in enumerate(PHRASES):
            if (name == "Aortic Valve" and rng.random() > 0.05) or (name != "Aortic Valve" and rng.random() < 0.2):
                continue
            n_phr = sum(len(v) for v in PHRASES[name].values())
            for p in sorted(rng.choice(n_phr, size=min(2, n_phr), replace=False)):
                value = round(float(rng.uniform(20, 70)), 1) if s != 1 else str(rng.choice(["mildly dilated", "small"]))
                ids.append((s, int(p), value))
        out.append(ids)
    return out


def make_echoprime(root: Path, seed: int = 0) -> dict:
    """The publisher's folder layout with a small random candidate bank."""
    rng = np.random.default_rng(seed)
    cand, assets = root / "model_data" / "candidates_data", root / "assets"
    cand.mkdir(parents=True)
    assets.mkdir()
    emb = torch.from_numpy(rng.standard_normal((N, DIM)).astype(np.float32))
    torch.save(emb[:120].clone(), cand / "candidate_embeddings_p1.pt")
    torch.save(emb[120:].clone(), cand / "candidate_embeddings_p2.pt")
    studies = [1000 + i for i in range(N)]
    pd.DataFrame({"Study": studies}).to_csv(cand / "candidate_studies.csv", index=False)
    reports = _reports(rng)
    pd.to_pickle(reports, cand / "candidate_reports.pkl")
    labels = {"ejection_fraction": {s: (np.nan if rng.random() < 0.1 else float(rng.uniform(20, 70)))
                                    for s in studies if rng.random() < 0.7},
              "impella": {s: int(rng.random() < 0.3) for s in studies if rng.random() < 0.6},
              "left_atrium_dilation": {s: int(rng.random() < 0.5) for s in studies if rng.random() < 0.8}}
    pd.to_pickle(labels, cand / "candidate_labels.pkl")
    weights = rng.uniform(0, 1, (len(SECTIONS), len(ECHO_VIEWS)))
    weights[2:, 9] = 0.0  # SSN counts nothing for Left Atrium / Aortic Valve
    mil = pd.DataFrame(weights, columns=list(ECHO_VIEWS))
    mil.insert(0, "Section", SECTIONS)
    mil.to_csv(assets / "MIL_weights.csv", index=False)
    (assets / "all_phr.json").write_text(json.dumps(PHRASES))
    modes = {k: {"mode": m, "label_sources": []} for k, m in MODES.items()}
    (assets / "per_section.json").write_text(json.dumps(modes))
    pd.to_pickle(S2P, assets / "section_to_phenotypes.pkl")
    pd.DataFrame({"feature": ["impella", "left_atrium_dilation"], "threshold": [0.16, 0.3]}).to_csv(
        assets / "roc_thresholds.csv")
    return {"emb": emb.numpy(), "studies": studies, "reports": reports, "labels": labels,
            "weights": pd.read_csv(assets / "MIL_weights.csv").iloc[:, 1:].to_numpy()}


# --- reference, from the facts of EchoPrime's code ----------------------------------------------
def ref_decode(ids: list[tuple]) -> str:
    names = list(PHRASES)
    flat = {k: [p for v in PHRASES[k].values() for p in v] for k in names}
    report, current = "", -1
    for s, p, value in ids:
        if s != current:
            report += ("[SEP] " if current != -1 else "") + names[s] + ": "
            current = s
        phr = flat[names[s]][p]
        phr = phr.replace("<numerical>", str(value)) if "<numerical>" in phr else phr.replace("<string>", str(value))
        report += phr + " "
    return report + "[SEP]"


def ref_draft(ep: dict, videos: np.ndarray, views: list[int]) -> tuple[dict, dict]:
    texts = [ref_decode(r) for r in ep["reports"]]
    sections, queries = {}, []
    for s, name in enumerate(SECTIONS):
        weighted = videos * ep["weights"][s, views].astype(np.float32)[:, None]
        q = weighted.mean(0)
        q = q / max(np.linalg.norm(q), 1e-12)
        sims = ep["emb"] @ q
        for i in np.argsort(-sims, kind="stable"):
            m = re.search(rf"{name}(.*?)(?=\[SEP\])", texts[i])
            if m:
                sections[name] = f"{name}{m.group(1)}[SEP]"
                break
        total = weighted.sum(0)
        queries.append(total / max(np.linalg.norm(total), 1e-12))
    preds = {}
    for i, (_, phenos) in enumerate(S2P.items()):  # i-th key -> i-th MIL section's neighbours
        top = np.argsort(-(ep["emb"] @ queries[i]), kind="stable")[:50]
        for ph in phenos:
            vals = [ep["labels"][ph][ep["studies"][c]] for c in top if ep["studies"][c] in ep["labels"][ph]]
            preds[ph] = np.nanmean(vals) if vals and not np.all(np.isnan(vals)) else np.nan
    return sections, preds


# --- tests -----------------------------------------------------------------------------------
def _import(src: Path, out: Path, *extra: str) -> dict:
    from medvid.pipelines import import_model as job

    return job.run(load_config(job.Config, None, None, ["family=echoprime-bank", f"src={src}", f"out={out}", *extra]))


def _study(key: str, videos: np.ndarray, views: list[int]) -> EncodedStudy:
    names = [ECHO_VIEWS[v] for v in views]
    return EncodedStudy(key, [f"{key}_v{i}" for i in range(len(views))], names, [0.9] * len(views),
                        ["classifier"] * len(views), [], torch.zeros(0, DIM), torch.zeros(0, len(views)),
                        torch.zeros(DIM), videos=torch.from_numpy(videos))


def test_imported_bank_drafts_as_echoprime(tmp_path):
    ep = make_echoprime(tmp_path / "EchoPrime")
    summary = _import(tmp_path / "EchoPrime", tmp_path / "bank")
    assert summary["candidates"] == N and not any(summary["scrub"]["changed"].values())
    bank = EchoPrimeBank(tmp_path / "bank")
    assert bank.manifest["source"] == "echoprime" and is_echoprime_bank(tmp_path / "bank")
    assert bank.report(7) == ref_decode(ep["reports"][7])
    rng = np.random.default_rng(1)
    cases = [(rng.standard_normal((n, DIM)).astype(np.float32) * 3, list(rng.integers(0, 11, n))) for n in (1, 3, 6)]
    cases.append((rng.standard_normal((2, DIM)).astype(np.float32), [9, 9]))  # zero weight: all scores tie at 0
    studies = [_study(f"s{i}", v, views) for i, (v, views) in enumerate(cases)]
    drafts = EchoPrimeDrafter(bank, ECHO_VIEWS, chunk=64).draft(studies)
    for draft, (videos, views) in zip(drafts, cases):
        want_sections, want_preds = ref_draft(ep, videos, views)
        assert {s: d["echoprime_text"] for s, d in draft["sections"].items()} == want_sections
        for ph, want in want_preds.items():
            got = draft["phenotypes"][ph]
            value = got["value"] if got["kind"] == "numeric" else got["score"]
            assert (value is None) if np.isnan(want) else value == pytest.approx(want, rel=1e-9)
        assert draft["phenotypes"]["impella"]["threshold"] == 0.16
        assert draft["phenotypes"]["ejection_fraction"]["kind"] == "numeric"
        lv = draft["sections"]["Left Ventricle"]
        assert lv["text"] == want_sections["Left Ventricle"][len("Left Ventricle: "):-len("[SEP]")].strip()


def test_import_scrubs_phrase_values(tmp_path):
    root = tmp_path / "EchoPrime"
    make_echoprime(root)
    reports = load_plain(root / "model_data/candidates_data/candidate_reports.pkl")
    reports[0] = [(1, 1, "seen by Dr. John Smith")]
    pd.to_pickle(reports, root / "model_data/candidates_data/candidate_reports.pkl")
    summary = _import(root, tmp_path / "bank")
    text = EchoPrimeBank(tmp_path / "bank").report(0)
    assert "Smith" not in text and "[NAME]" in text and summary["scrub"]["changed"]["values"] >= 1


def test_pickle_with_code_is_refused_and_nothing_written(tmp_path):
    root = tmp_path / "EchoPrime"
    make_echoprime(root)
    marker = tmp_path / "pwned"
    (root / "model_data/candidates_data/candidate_labels.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(MedvidError, match=r"candidate_labels\.pkl.*system"):
        _import(root, tmp_path / "bank")
    assert not marker.exists() and not (tmp_path / "bank").exists()


@pytest.mark.parametrize("what", ["embeddings", "reports"])
def test_sizes_that_disagree_are_refused_before_work(tmp_path, what):
    root = tmp_path / "EchoPrime"
    make_echoprime(root)
    cand = root / "model_data/candidates_data"
    if what == "embeddings":
        torch.save(torch.zeros(5, DIM), cand / "candidate_embeddings_p2.pt")
    else:
        pd.to_pickle(load_plain(cand / "candidate_reports.pkl")[:-1], cand / "candidate_reports.pkl")
    with pytest.raises(MedvidError, match="do not belong together"):
        _import(root, tmp_path / "bank")
    assert not (tmp_path / "bank").exists()


def test_import_refuses_a_folder_it_did_not_write(tmp_path):
    make_echoprime(tmp_path / "EchoPrime")
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "notes.txt").write_text("mine")
    with pytest.raises(MedvidError, match="did not write"):
        _import(tmp_path / "EchoPrime", tmp_path / "bank")
    assert (tmp_path / "bank" / "notes.txt").read_text() == "mine"


def test_safe_pickle_reads_plain_data_and_refuses_globals(tmp_path):
    plain = {"df": pd.DataFrame({"ef": [1.0, np.nan]}, index=["a", "b"]), "arr": np.arange(3.0),
             "scalar": np.float64(2.5), "rows": [[(0, 1, 2.5)]], "series": pd.Series([1.0], index=[5])}
    for proto in (2, 4, 5):
        pd.to_pickle(plain, tmp_path / "ok.pkl", protocol=proto)
        got = load_plain(tmp_path / "ok.pkl")
        assert got["df"].equals(plain["df"]) and got["scalar"] == 2.5 and got["rows"] == plain["rows"]
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(MedvidError, match=r"evil\.pkl: refused.*system"):
        load_plain(tmp_path / "evil.pkl")
    (tmp_path / "cls.pkl").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(MedvidError, match="refused"):
        load_plain(tmp_path / "cls.pkl")
    assert not marker.exists()


def test_split_all_takes_every_study():
    from medvid.io.ingest_folder import split_rows

    df = pd.DataFrame({"study_key": ["a", "b"], "split": ["train", "test"]})
    assert list(split_rows(df, "all", "x")["study_key"]) == ["a", "b"]


@pytest.mark.slow
def test_medvid_draft_with_imported_echoprime_matches_reference(tmp_path):
    """The CLI sequence of docs/models.md: import the encoder, the view classifier (random weights in the
    publisher's layout) and the candidate bank, then ``medvid draft ... split=all``: every study's sections and
    phenotypes equal the reference run on the raw mViT embeddings of the same clips with the views EchoPrime
    would classify (first frame of each clip). ~2-8 min on 2 shared cores (mViT-v2-S at 16 x 224²)."""
    from typer.testing import CliRunner

    from echo_testdata import ingest
    from medvid.cli import app
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.models.checkpoint import load_pretrained
    from medvid.pipelines import draft as job
    from medvid.synth.echo import synthesize
    from model_testdata import import_tiny_echoprime

    synth = tmp_path / "synth"
    synthesize(synth, studies=2, seed=5, loops_per_study=2, rows=64, cols=80, frames_range=(20, 40),
               still_fraction=0.0)
    ingest(synth / "dicom", tmp_path / "ingest")
    ep = make_echoprime(tmp_path / "EchoPrime")
    import_tiny_echoprime(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["import", "echoprime-bank", str(tmp_path / "EchoPrime"), "--out", str(tmp_path / "bank")])
    assert r.exit_code == 0, r.output
    model, views = tmp_path / "echoprime", tmp_path / "echoprime-view"
    summary = job.run(load_config(job.Config, "draft", None, [
        f"input={tmp_path / 'ingest'}", f"model={model}", f"views={views}", f"bank={tmp_path / 'bank'}",
        f"out={tmp_path / 'out'}", f"dicom_root={synth / 'dicom'}", "split=all", "progress=false",
        "encoding.num_workers=0"]))
    assert summary["drafts_total"] == 2 and summary["errors_total"] == 0

    encoder, classifier = load_pretrained(model), load_pretrained(views)
    clips = EchoVideoDataset.for_model(tmp_path / "ingest", synth / "dicom", encoder, start="begin")
    per_study: dict[str, tuple[list, list]] = {}
    with torch.no_grad():
        for _, row in clips.videos.iterrows():
            clip = clips.clip(row)[None]
            emb, view = per_study.setdefault(row["study_key"], ([], []))
            emb.append(encoder.model(clip)[0].numpy())
            view.append(int(classifier.model(clip[:, :, 0]).argmax()))
    rows = [json.loads(line) for line in (tmp_path / "out" / "drafts.jsonl").read_text().splitlines()]
    assert {r["study_key"] for r in rows} == set(per_study)
    for r in rows:
        videos, views_ = per_study[r["study_key"]]
        want_sections, want_preds = ref_draft(ep, np.stack(videos), views_)
        assert {s: d["echoprime_text"] for s, d in r["sections"].items()} == want_sections
        for ph, want in want_preds.items():
            got = r["phenotypes"][ph]
            value = got["value"] if got["kind"] == "numeric" else got["score"]
            assert (value is None) if np.isnan(want) else value == pytest.approx(want, rel=1e-9)
        assert (tmp_path / "out" / "drafts" / f"{r['study_key']}.sr.dcm").is_file()
        assert r["provenance"]["bank"]["fingerprint"] == EchoPrimeBank(tmp_path / "bank").fingerprint
