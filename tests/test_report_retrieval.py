"""A study never retrieves itself or its patient's studies (exact, k kept), and calibration refuses thresholds
from too few studies of a class."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medvid.report.bank import Bank, SectionRows, write_bank
from medvid.report.calibrate import MIN_PER_CLASS, calibrate_phenotypes
from medvid.report.draft import DraftSettings, Drafter
from medvid.report.encode import EncodedStudy
from medvid.report.retrieval import SearchOptions, StudyIndex, patients_of, search


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _bank(tmp_path, x: np.ndarray, study: np.ndarray, keys: list[str], patients: list[str] | None = None,
          labels: dict | None = None) -> Bank:
    """One Left Ventricle section; with ``patients``, a studies table that has a ``patient_key`` column."""
    studies = pd.DataFrame({"study_key": keys, **(labels or {})})
    path = write_bank(tmp_path / "bank", [("Left Ventricle", SectionRows(x.astype(np.float16), study.astype(np.int32),
                                                                         [f"text of {keys[s]}" for s in study]))],
                      studies, dim=x.shape[1], rows=len(x), manifest={"model": {"fingerprint": "m"}})
    if patients is not None:  # the studies table as a bank that records patients has it
        studies.assign(patient_key=patients).to_parquet(path / "studies.parquet", index=False)
    return Bank(path)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_excluded_studies_never_return_and_the_rest_is_exact(tmp_path, precision):
    n, dim = 300, 16
    x = _unit(n, dim, 0)
    study = np.arange(n) // 2  # two rows per study
    bank = _bank(tmp_path, x, study, [f"st_{i:04d}" for i in range(n // 2)])
    q = torch.from_numpy(x[[0, 10, 57, 200]])  # each query is a bank row: its own study is the nearest
    exclude = [np.array([0]), np.array([5, 6, 7]), np.array([], np.int64), np.array([100])]
    hits = search(bank, {"Left Ventricle": q}, k=10, exclude=exclude,
                  options=SearchOptions(precision=precision, shortlist=4))["Left Ventricle"]
    emb = bank.embeddings.astype(np.float32)
    for b, ex in enumerate(exclude):
        sims, rows = hits.of(b)
        assert len(rows) == 10 and not set(study[rows]) & set(ex.tolist())
        allowed = np.flatnonzero(~np.isin(study, ex))
        scores = emb[allowed] @ q[b].numpy()
        expected = allowed[np.argsort(-scores, kind="stable")[:10]]
        assert set(rows.tolist()) == set(expected.tolist())
    assert hits.of(2)[1][0] == 57  # nothing excluded: the row itself is the nearest


def test_small_section_keeps_every_other_row(tmp_path):
    x = _unit(3, 8, 1)
    bank = _bank(tmp_path, x, np.arange(3), ["st_a", "st_b", "st_c"])
    hits = search(bank, {"Left Ventricle": torch.from_numpy(x[:2])}, k=5,
                  exclude=[np.array([0]), np.zeros(0, np.int64)])["Left Ventricle"]
    assert sorted(hits.of(0)[1].tolist()) == [1, 2] and sorted(hits.of(1)[1].tolist()) == [0, 1, 2]
    assert hits.rows[0, -1] == -1  # padded to the longest


def test_study_index_by_study_and_patient():
    keys = np.array(["st_c", "st_a", "st_d", "st_b"])  # unsorted, as a text bank may be
    index = StudyIndex(keys, np.array(["pt_1", "pt_2", "", "pt_1"]))
    assert index.excluded("st_c").tolist() == [0, 3]            # the bank knows st_c's patient
    assert index.excluded("st_new", "pt_1").tolist() == [0, 3]  # a new study of a known patient
    assert index.excluded("st_d").tolist() == [2] and index.excluded("st_x").tolist() == []
    assert index.own("st_b") == 3 and index.own("st_x") is None
    assert StudyIndex(keys).excluded("st_c", "pt_1").tolist() == [0]  # an old bank: by study key only
    videos = pd.DataFrame({"study_key": ["st_a", "st_a", "st_x"], "patient_key": ["pt_2", "pt_2", ""]})
    assert patients_of(videos) == {"st_a": "pt_2"}


def _encoded(key: str, vec: np.ndarray) -> EncodedStudy:
    return EncodedStudy(key, ["vi_1"], ["A4C"], [1.0], ["known"], ["Left Ventricle"],
                        torch.from_numpy(vec[None]).float(), torch.ones(1, 1), torch.from_numpy(vec).float())


def test_drafting_the_banks_own_studies_never_retrieves_them(tmp_path):
    """Drafting with split="" drafts the bank's own studies: none may be its own neighbour (issue 27, item 3)."""
    n = 40
    x = _unit(n, 16, 2)
    keys = [f"st_{i:03d}" for i in range(n)]
    patients = [f"pt_{i // 2}" for i in range(n)]  # studies 2j and 2j+1 are one patient's
    bank = _bank(tmp_path, x, np.arange(n), keys, patients, labels={"ef": np.arange(n, dtype=float)})
    drafter = Drafter(bank, DraftSettings(neighbours=5, knn_k=10))
    rows = drafter.draft([_encoded(k, x[i]) for i, k in enumerate(keys)])
    for i, row in enumerate(rows):
        neighbours = {nb["study_key"] for nb in row["sections"]["Left Ventricle"]["neighbours"]}
        assert len(neighbours) == 5 and not neighbours & {keys[i], keys[i ^ 1]}, (i, neighbours)
        assert row["sections"]["Left Ventricle"]["text"] not in (f"text of {keys[i]}", f"text of {keys[i ^ 1]}")
        assert row["phenotypes"]["ef"]["n"] == 10 and row["in_bank"]
    # a new study of a bank patient: that patient's studies are left out (the ingest names the patient)
    new = Drafter(bank, DraftSettings(neighbours=3), patients={"st_new": "pt_3"}).draft([_encoded("st_new", x[6])])
    assert not {nb["study_key"] for nb in new[0]["sections"]["Left Ventricle"]["neighbours"]} & {"st_006", "st_007"}
    assert new[0]["in_bank"] is False


def test_a_section_only_the_study_itself_has_is_left_out(tmp_path):
    x = _unit(2, 8, 3)
    bank = _bank(tmp_path, x[:1], np.array([0]), ["st_a", "st_b"])
    [row] = Drafter(bank, DraftSettings()).draft([_encoded("st_a", x[0])])
    assert row["sections"] == {} and row["in_bank"]


class _Study:
    def __init__(self, key: str, emb: np.ndarray):
        self.study_key, self.sections, self.embeddings = key, ["Left Ventricle"], torch.from_numpy(emb[None]).float()


def test_calibration_needs_enough_studies_of_each_class(tmp_path):
    n = 60
    x = _unit(n, 8, 4)
    reduced = (x[:, 0] > 0).astype(float)
    bank = _bank(tmp_path, x, np.arange(n), [f"st_{i}" for i in range(n)], labels={"reduced_ef": reduced})
    val = _unit(40, 8, 5)
    y = (val[:, 0] > 0).astype(float)
    sec = {"reduced_ef": "Left Ventricle"}

    def calibrate(idx):
        return calibrate_phenotypes(bank, sec, [_Study(f"v{i}", val[i]) for i in idx], {"reduced_ef": y[idx]},
                                    DraftSettings(), select=False)

    few = np.array([int(np.flatnonzero(y == 1)[0])] + list(np.flatnonzero(y == 0)[:3]))  # 1 positive, 3 negatives
    thresholds, info, _, _ = calibrate(few)
    assert thresholds == {} and "1 positive and 3 negative" in info["reduced_ef"]["threshold_skipped"]
    assert str(MIN_PER_CLASS) in info["reduced_ef"]["threshold_skipped"]
    thresholds, info, _, _ = calibrate(np.arange(40))
    assert 0 < thresholds["reduced_ef"] < 1 and "threshold_skipped" not in info["reduced_ef"]


def test_calibrating_on_bank_studies_does_not_retrieve_them(tmp_path):
    n = 30
    x = _unit(n, 8, 6)
    ef = np.linspace(20, 80, n)
    bank = _bank(tmp_path, x, np.arange(n), [f"st_{i}" for i in range(n)], labels={"ef": ef})
    studies = [_Study(f"st_{i}", x[i]) for i in range(n)]
    _, info, _, _ = calibrate_phenotypes(bank, {"ef": "Left Ventricle"}, studies, {"ef": ef},
                                         DraftSettings(knn_k=1, knn_temperature=None), select=False)
    assert info["ef"]["mae"] > 1.0  # with itself as neighbour 1 the error would be 0

