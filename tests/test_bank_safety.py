"""Bank safety: only sentences shared by k distinct patients reach a bank (so none unique to one patient is
copied into another's draft), every file a bank loads stays inside its folder, and the bank fingerprint
drafts record covers every one of those files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medvid.errors import MedvidError
from medvid.report.bank import Bank, SectionRows, write_bank


def test_sentence_identity_templates_measurements_not_identifiers():
    from medvid.report.sentences import sentence_key, split_sentences

    assert split_sentences("LV is 4.5 cm.  EF 55%; no effusion. ") == ["LV is 4.5 cm.", "EF 55%;", "no effusion."]
    assert sentence_key("LVEF 55%.") == sentence_key("lvef  60%") == "lvef <#>%"
    assert sentence_key("E/A/e' 0.9/0.7/10.") == "e/a/e' <#>/<#>/<#>"
    # identifier-shaped numbers stay as written: two patients' dates, phones or record numbers never match
    for a, b in [("Prior study of 03/15/2023.", "Prior study of 04/02/2022."), ("Prior 15 Mar 2023.", "Prior 2 Mar 2023."),
                 ("Call 555-1234.", "Call 555-9876."), ("MRN 1234567.", "MRN 7654321."), ("Seen in 2019.", "Seen in 2020.")]:
        assert sentence_key(a) != sentence_key(b)


def _reports(n: int, extra: dict[int, str]) -> dict[str, dict[str, str]]:
    """Study ``st_i`` -> sections; every study shares the LV sentences (its own EF), ``extra`` adds text."""
    return {f"st_{i}": {"Left Ventricle": f"Normal LV size. LVEF {50 + i}%. {extra.get(i, '')}".strip(),
                        **({"Pericardium": "Small effusion seen by Sarah Thompson."} if i == 0 else {})}
            for i in range(n)}


def test_only_sentences_of_k_distinct_patients_are_kept_with_their_own_numbers():
    from medvid.report.sentences import keep_shared_sentences

    texts = _reports(6, {i: "Mild MR." for i in range(5)})  # "Mild MR." in st_0..st_4
    patients = {"st_0": "pt_a", "st_1": "pt_a", "st_2": "pt_b", "st_3": "pt_c", "st_4": "", "st_5": ""}
    shared = keep_shared_sentences(texts, patients, min_patients=5)
    # "Mild MR." is in 5 studies but only 4 patients (st_0 and st_1 are pt_a); the unique name never survives
    assert shared.texts["st_0"] == {"Left Ventricle": "Normal LV size. LVEF 50%.", "Pericardium": ""}  # withheld
    assert shared.texts["st_5"] == {"Left Ventricle": "Normal LV size. LVEF 55%."}
    assert (shared.sentences_kept, shared.sentences_dropped, shared.sections_withheld) == (12, 6, 1)
    kept4 = keep_shared_sentences(texts, patients, min_patients=4).texts
    assert kept4["st_1"]["Left Ventricle"] == "Normal LV size. LVEF 51%. Mild MR." and kept4["st_0"]["Pericardium"] == ""
    assert keep_shared_sentences(texts, patients, 1).texts["st_0"]["Pericardium"]  # 1 keeps every sentence
    with pytest.raises(MedvidError, match="shared by 7 distinct patients"):
        keep_shared_sentences(texts, patients, min_patients=7)


def test_a_study_left_without_sentences_keeps_label_only_rows_in_a_video_bank_only():
    from medvid.report.sentences import keep_shared_sentences

    texts = {**_reports(5, {}), "st_x": {"Aorta": "Aortic root 3.1 cm per Dr. Patel."}}
    shared = keep_shared_sentences(texts, {}, min_patients=5)
    assert shared.texts["st_x"] == {"Aorta": ""} and shared.studies_withheld == 1 and len(shared.texts) == 6
    assert "st_x" not in shared.with_text() and len(shared.with_text()) == 5


def test_study_patients_from_the_ingest_videos_table():
    from medvid.report.build import study_patients

    videos = pd.DataFrame({"study_key": ["s1", "s1", "s2", "s3"], "video_key": list("abcd"),
                           "patient_key": ["", "pt_1", "pt_1", ""]})
    assert study_patients(videos) == {"s1": "pt_1", "s2": "pt_1", "s3": ""}


def test_text_bank_keeps_only_shared_sentences_and_records_it(tmp_path):
    from draft_testdata import TINY_VIDEO_TEXT
    from medvid.config import load_config
    from medvid.models.factory import create_model
    from medvid.pipelines import bank as job

    rows = [(f"1.2.3.{i}", f"Left Ventricle: Normal LV size. LVEF {50 + i}%.\nPericardium: No effusion."
             + (" Discussed with Jose Garcia at bedside." if i == 2 else "")) for i in range(6)]
    rows.append(("1.2.3.9", "Aorta: Aortic root 3.1 cm per jkim."))
    pd.DataFrame(rows, columns=["study_uid", "report"]).to_csv(tmp_path / "reports.csv", index=False)
    model = create_model(TINY_VIDEO_TEXT).save_pretrained(tmp_path / "model")
    summary = job.run(load_config(job.Config, "bank", None, [
        f"input={tmp_path / 'reports.csv'}", f"model={model}", f"bank={tmp_path / 'bank'}", "progress=false"]))
    bank = Bank(tmp_path / "bank")
    texts = bank.texts(range(bank.rows))
    assert "Normal LV size. LVEF 52%." in texts and "No effusion." in texts
    assert not any("Garcia" in t or "jkim" in t or "Aortic root" in t for t in texts)
    expected = {"min_patients": 5, "sentences_kept": 18, "sentences_dropped": 2, "sections_withheld": 1,
                "studies_withheld": 1}
    assert bank.manifest["shared_sentences"] == expected and summary["shared_sentences"] == expected
    assert list(bank.studies.columns[:2]) == ["study_key", "patient_key"] and len(bank.studies) == 6
    assert "patient_key" not in bank.phenotypes


@pytest.mark.slow
def test_video_bank_rows_hold_only_sentences_of_k_patients(tmp_path):
    """``bank build`` of a synthetic ingest (~20 s on 2 idle cores): the studies table carries the ingest's
    patient keys, and every sentence of every row is found in the reports of at least 5 distinct patients."""
    from draft_testdata import build_bank, tiny_models
    from echo_testdata import ingest_synth
    from medvid.io.ingest_folder import IngestFolder
    from medvid.io.reports import parse_sections
    from medvid.report.build import study_patients
    from medvid.report.sentences import sentence_key, split_sentences
    from medvid.synth.echo import synthesize

    synthesize(tmp_path / "synth", studies=8, seed=5, loops_per_study=2, rows=64, cols=80, frames_range=(8, 10),
               still_fraction=0.0)
    ingest_synth(tmp_path / "synth", tmp_path / "ingest")
    model, views = tiny_models(tmp_path)
    summary = build_bank(tmp_path, model, views, tmp_path / "bank", "split=''", "min_patients=5")
    bank, folder = Bank(tmp_path / "bank"), IngestFolder(tmp_path / "ingest")
    patients = study_patients(folder.read_videos())
    assert len(set(patients.values()) - {""}) == 8  # one patient per synthetic study
    studies = bank.studies.set_index("study_key")
    assert all(studies.at[k, "patient_key"] == patients[k] for k in studies.index)
    sharers: dict[str, set[str]] = {}
    for key, report in zip(*folder.read_reports()[["study_key", "report"]].T.values):
        for sentence in (x for text in parse_sections(report).values() for x in split_sentences(text)):
            sharers.setdefault(sentence_key(sentence), set()).add(patients[key])
    kept = [x for t in bank.texts(range(bank.rows)) for x in split_sentences(t)]
    assert kept and all(len(sharers.get(sentence_key(x), ())) >= 5 for x in kept)
    assert summary["shared_sentences"]["sentences_dropped"] > 0 and bank.manifest["shared_sentences"]["min_patients"] == 5


# --------------------------------------------------------------------------- files the bank loads


def _write(directory, studies: pd.DataFrame):
    part = SectionRows(np.eye(2, 4, dtype=np.float16), np.array([0, 1], np.int32), ["LV normal.", "LV reduced."])
    return write_bank(directory, [("Left Ventricle", part)], studies, dim=4, rows=2,
                      manifest={"model": {"fingerprint": "m"}})


@pytest.fixture
def bank_dir(tmp_path):
    return _write(tmp_path / "bank", pd.DataFrame({"study_key": ["st_a", "st_b"], "reduced_ef": [0.0, 1.0]}))


def _calibrated(directory) -> Bank:
    bank = Bank(directory)
    bank.set_thresholds({"reduced_ef": 0.5}, {"method": "youden"}, {"reduced_ef": {"method": "linear"}},
                        {"reduced_ef": {"w": [1.0, 0, 0, 0], "b": 0.0}})
    return Bank(directory)


def _set_manifest(directory, **fields) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, **fields}))


def test_patient_key_is_stored_and_not_a_phenotype(tmp_path):
    bank = Bank(_write(tmp_path / "bank", pd.DataFrame({"study_key": ["st_a", "st_b"], "patient_key": ["pt_1", ""],
                                                        "reduced_ef": [0.0, 1.0]})))
    assert bank.studies["patient_key"].tolist() == ["pt_1", ""] and bank.phenotypes == {"reduced_ef": "binary"}
    assert bank.labels.shape == (2, 1)


def test_a_bank_without_patient_keys_still_loads(bank_dir):  # as banks built before patients were recorded
    assert Bank(bank_dir).studies["patient_key"].tolist() == ["", ""]


def test_heads_outside_the_bank_are_refused(bank_dir, tmp_path):
    bank = _calibrated(bank_dir)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **{"reduced_ef.w": np.array([-9.0, 0, 0, 0]), "reduced_ef.b": np.array(9.0)})
    for name in ("../evil.npz", str(evil)):
        _set_manifest(bank_dir, heads=name)
        with pytest.raises(MedvidError, match="refused"):
            Bank(bank_dir)
    _set_manifest(bank_dir, heads=bank.manifest["heads"])
    assert Bank(bank_dir).heads["reduced_ef"][1] == 0.0


def test_a_bank_file_that_is_a_symlink_out_is_refused(bank_dir, tmp_path):
    outside = tmp_path / "other.parquet"
    (bank_dir / "rows.parquet").rename(outside)
    (bank_dir / "rows.parquet").symlink_to(outside)
    with pytest.raises(MedvidError, match="rows.parquet.*refused"):
        Bank(bank_dir)


def test_ann_files_outside_the_bank_are_refused(bank_dir):
    _set_manifest(bank_dir, ann={"kind": "ivf", "params": {}, "files": {"Left Ventricle": "../../x.faiss"}})
    with pytest.raises(MedvidError, match="refused"):
        Bank(bank_dir)


def test_fingerprint_covers_every_file_the_bank_loads(bank_dir):
    bank = _calibrated(bank_dir)
    before = bank.fingerprint
    assert Bank(bank_dir).fingerprint == before and len(before) == 20
    heads = bank_dir / bank.manifest["heads"]
    np.savez(heads.with_suffix(".tmp.npz"), **{"reduced_ef.w": np.array([-9.0, 0, 0, 0]), "reduced_ef.b": np.array(9.0)})
    heads.with_suffix(".tmp.npz").replace(heads)  # same name, other weights: the drafts' calls flip
    assert Bank(bank_dir).fingerprint != before
    for name in ("labels.npy", "study_keys.npy"):
        changed = Bank(bank_dir).fingerprint
        arr = np.load(bank_dir / name)
        np.save(bank_dir / name, arr[::-1].copy())
        assert Bank(bank_dir).fingerprint != changed, name


def test_a_withheld_row_votes_on_phenotypes_but_the_text_comes_from_the_next_neighbour(tmp_path):
    import torch

    from medvid.report.bank import SectionRows, write_bank
    from medvid.report.draft import DraftSettings, Drafter

    emb = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0]], np.float16)
    studies = pd.DataFrame({"study_key": ["st_a", "st_b", "st_c"], "patient_key": "", "tr": [1.0, 0.0, 0.0]})
    rows = SectionRows(emb, np.arange(3, dtype=np.int32), ["", "Trace tricuspid regurgitation.", "Normal."])
    bank = Bank(write_bank(tmp_path / "bank", [("Tricuspid Valve", rows)], studies, dim=4, rows=3,
                           manifest={"model": {"name": "tiny", "fingerprint": "m"}}))

    class Study:
        study_key, sections = "st_q", ["Tricuspid Valve"]
        embeddings = torch.tensor([[1.0, 0, 0, 0]])
        video_keys, views, view_confidence, view_source, weights = [], [], [], [], [[]]

    settings = DraftSettings(knn_k=1, knn_temperature=None, phenotype_sections={"tr": "Tricuspid Valve"})
    [draft] = Drafter(bank, settings).draft([Study()])
    assert draft["sections"]["Tricuspid Valve"]["text"] == "Trace tricuspid regurgitation."  # st_a's text withheld
    assert draft["phenotypes"]["tr"]["score"] == pytest.approx(1.0)  # st_a still votes (k = 1: the nearest row only)
