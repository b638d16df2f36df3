"""Report bank storage, lazy opening, model checks, chunked exact top-k, kNN phenotypes, Youden thresholds."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medvid.errors import MedvidError
from medvid.report.bank import Bank, SectionRows, write_bank
from medvid.report.phenotypes import knn_phenotypes, knn_weights, youden_threshold
from medvid.report.retrieval import search, topk_rows


def _bank(path, sections: dict[str, list[tuple[int, list[float], str]]], studies: pd.DataFrame, dim: int = 4,
          model: str = "m1"):
    parts = [(s, SectionRows(np.array([e for _, e, _ in rows], np.float16).reshape(-1, dim),
                             np.array([i for i, _, _ in rows], np.int32), [t for _, _, t in rows]))
             for s, rows in sections.items()]
    return write_bank(path, parts, studies, dim=dim, rows=sum(len(r) for r in sections.values()),
                      manifest={"model": {"name": "tiny", "fingerprint": model}})


@pytest.fixture
def small_bank(tmp_path):
    studies = pd.DataFrame({"study_key": ["st_a", "st_b", "st_c"], "ef": [60.0, 30.0, np.nan],
                            "reduced_ef": [0.0, 1.0, 1.0]})
    sections = {  # st_b has no Pericardium section; st_c has no Left Ventricle
        "Left Ventricle": [(0, [1, 0, 0, 0], "LV normal."), (1, [0, 1, 0, 0], "LV reduced.")],
        "Pericardium": [(0, [0, 0, 1, 0], "No effusion."), (2, [0, 1, 0, 0], "Small effusion.")],
    }
    return Bank(_bank(tmp_path / "bank", sections, studies))


def test_bank_round_trip_is_lazy_and_keyed_by_section(small_bank):
    b = small_bank
    assert isinstance(b.embeddings, np.memmap) and b.embeddings.dtype == np.float16
    assert b.rows == 4 and b.sections == ["Left Ventricle", "Pericardium"]
    assert b.section_slice("Pericardium") == (2, 4) and b.section_slice("Aorta") == (0, 0)
    assert b.texts([3, 0]) == ["Small effusion.", "LV normal."]
    assert list(b.study_keys) == ["st_a", "st_b", "st_c"]
    assert b.phenotypes == {"ef": "numeric", "reduced_ef": "binary"}
    assert np.isnan(b.labels[2, 0]) and b.labels[1, 1] == 1


def test_search_never_returns_a_row_of_another_section(small_bank):
    q = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # identical to st_b's LV row and st_c's pericardium row
    hits = search(small_bank, {"Pericardium": q, "Left Ventricle": q, "Aorta": q}, k=5)
    assert set(hits) == {"Pericardium", "Left Ventricle"}  # a section the bank lacks is left out
    sims, rows = hits["Pericardium"]
    assert set(rows[0].tolist()) == {2, 3} and rows[0, 0] == 3  # st_b (no Pericardium) is never a neighbour
    assert small_bank.study_keys[small_bank.row_study[rows[0, 0]]] == "st_c"
    assert small_bank.study_keys[small_bank.row_study[hits["Left Ventricle"][1][0, 0]]] == "st_b"


def test_chunked_topk_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(1000, 16, generator=g), dim=-1).half().numpy()
    q = torch.nn.functional.normalize(torch.randn(7, 16, generator=g), dim=-1)
    s, i = topk_rows(x, q, k=10, chunk=37)
    bs, bi = (q @ torch.from_numpy(x).float().T).topk(10, dim=1)
    assert torch.equal(i, bi) and torch.allclose(s, bs)
    s, i = topk_rows(x[:5], q, k=10, chunk=2)  # fewer rows than k
    assert i.shape == (7, 5)


def test_bank_of_another_model_is_refused(small_bank):
    assert Bank.open(small_bank.dir, model_fingerprint="m1").rows == 4
    with pytest.raises(MedvidError, match="built with model m1"):
        Bank.open(small_bank.dir, model_fingerprint="m2")


def test_bank_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(MedvidError, match="not a medvid report bank"):
        _bank(tmp_path / "x", {"Aorta": [(0, [1, 0, 0, 0], "t")]}, pd.DataFrame({"study_key": ["st_a"]}))
    with pytest.raises(MedvidError, match="not a medvid report bank"):
        Bank(tmp_path / "x")


def test_text_lookup_across_row_groups(tmp_path, monkeypatch):
    import medvid.report.bank as bank_mod

    monkeypatch.setattr(bank_mod, "ROW_GROUP", 3)
    rows = {"Aorta": [(i, [1, 0, 0, 0], f"a{i}") for i in range(5)], "IVC": [(i, [0, 1, 0, 0], f"i{i}") for i in range(4)]}
    b = Bank(_bank(tmp_path / "b", rows, pd.DataFrame({"study_key": [f"st_{i}" for i in range(5)]})))
    assert b._rows_file.metadata.num_row_groups == 3
    assert b.texts(range(9)) == [f"a{i}" for i in range(5)] + [f"i{i}" for i in range(4)]


def test_set_thresholds_is_stored(small_bank):
    small_bank.set_thresholds({"reduced_ef": 0.3}, {"method": "youden"})
    again = Bank(small_bank.dir)
    assert again.thresholds == {"reduced_ef": 0.3} and again.manifest["calibration"]["method"] == "youden"
    with pytest.raises(MedvidError):
        again.set_thresholds({"unknown": 0.1}, {})
    assert json.loads((small_bank.dir / "manifest.json").read_text())["rows"] == 4


def test_knn_phenotype_math():
    sims = np.array([0.9, 0.8, 0.1, 0.5])
    labels = np.array([[50.0, 1], [70.0, 0], [10.0, 1], [np.nan, np.nan]])
    kinds = {"ef": "numeric", "reduced_ef": "binary"}
    out = knn_phenotypes(sims, labels, ["ef", "reduced_ef"], kinds, {"reduced_ef": 0.4}, k=3, temperature=None)
    # k=3 keeps 0.9, 0.8, 0.5; the 0.5 neighbour has no label
    assert out["ef"]["value"] == pytest.approx((0.9 * 50 + 0.8 * 70) / 1.7) and out["ef"]["n"] == 2
    assert out["reduced_ef"]["score"] == pytest.approx(0.9 / 1.7)
    assert out["reduced_ef"]["call"] == 1 and out["reduced_ef"]["threshold"] == 0.4
    soft = knn_phenotypes(sims, labels, ["ef"], kinds, {}, k=4, temperature=0.1)
    w = knn_weights(np.array([0.9, 0.8, 0.1]), 0.1)
    assert soft["ef"]["value"] == pytest.approx(float(w @ [50, 70, 10] / w.sum()))
    none = knn_phenotypes(sims[:1], labels[3:4], ["ef", "reduced_ef"], kinds, {}, k=5)
    assert none["ef"]["value"] is None and none["reduced_ef"]["call"] is None and none["reduced_ef"]["threshold"] == 0.5


def test_youden_threshold():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.65, 0.5, 0.6, 0.9]
    # J at 0.9: 1/3 - 0; at 0.65: 1/3 - 1/3; at 0.6: 2/3 - 1/3; at 0.5: 1 - 1/3 (best)
    assert youden_threshold(y, s) == pytest.approx(0.5)
    assert youden_threshold([0, 1], [0.2, 0.8]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        youden_threshold([1, 1], [0.2, 0.3])
