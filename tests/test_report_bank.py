"""Report bank storage, lazy opening, model checks, chunked exact top-k, the bfloat16 shortlist, the optional
faiss index, kNN phenotypes, linear heads chosen on validation, Youden thresholds."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medvid.errors import MedvidError
from medvid.report.bank import Bank, SectionRows, write_bank
from medvid.report.phenotypes import (draft_phenotypes, fit_linear, knn_phenotypes, knn_weights, section_training_set,
                                      youden_threshold)
from medvid.report.ann import check_ann
from medvid.report.retrieval import SearchOptions, search, topk_rows, topk_rows_bf16


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


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_bf16_shortlist_rescored_equals_the_fp32_scan():
    x = _unit(3000, 32, 0)
    q = torch.from_numpy(_unit(9, 32, 1)).float()
    want_s, want_i = topk_rows(x, q, k=10, chunk=700)
    for cached in (None, torch.from_numpy(x).bfloat16()):
        s, i = topk_rows_bf16(x, q, k=10, shortlist=4, chunk=700, cached=cached)
        assert torch.equal(i, want_i) and torch.allclose(s, want_s, atol=1e-6)  # rescored in float32
    s, i = topk_rows_bf16(x[:6], q, k=10)  # fewer rows than k
    assert i.shape == (9, 6)
    with pytest.raises(MedvidError, match="precision"):
        SearchOptions(precision="fp8")


def _random_bank(tmp_path, name: str, ann: dict | None, n: int = 600, dim: int = 16):
    x = _unit(2 * n, dim, 2)
    parts = [("Aorta", SectionRows(x[:n], np.arange(n, dtype=np.int32), [f"a{i}" for i in range(n)])),
             ("IVC", SectionRows(x[n:], np.arange(n, dtype=np.int32), [f"i{i}" for i in range(n)]))]
    return write_bank(tmp_path / name, parts, pd.DataFrame({"study_key": [f"st_{i}" for i in range(n)]}), dim=dim,
                      rows=2 * n, manifest={"model": {"name": "tiny", "fingerprint": "m"}}, ann=ann)


def test_ann_index_agrees_with_exact_search(tmp_path):
    pytest.importorskip("faiss")
    q = {s: torch.from_numpy(_unit(12, 16, 3 + j)).float() for j, s in enumerate(("Aorta", "IVC"))}
    exact = search(Bank(_random_bank(tmp_path, "plain", None)), q, k=10, options=SearchOptions(precision="fp32"))
    ivf = Bank(_random_bank(tmp_path, "ivf", {"kind": "ivf", "nlist": 8}))
    assert ivf.search_options.index == "ann" and ivf.manifest["ann"]["kind"] == "ivf"
    full = search(ivf, q, k=10, options=SearchOptions(index="ann", nprobe=8))  # every list: exhaustive
    hnsw = search(Bank(_random_bank(tmp_path, "hnsw", {"kind": "hnsw", "hnsw_m": 16})), q, k=10)
    found = 0
    for s in q:
        assert torch.equal(full[s][1], exact[s][1]) and torch.allclose(full[s][0], exact[s][0], atol=1e-3)
        assert full[s][1].min() >= Bank(tmp_path / "ivf").section_slice(s)[0]  # global rows of that section
        found += sum(len(set(a) & set(b)) for a, b in zip(hnsw[s][1].tolist(), exact[s][1].tolist()))
    assert found / (2 * 12 * 10) >= 0.95
    probed = search(ivf, q, k=10, options=SearchOptions(index="ann", nprobe=1))
    assert all((probed[s][1] >= 0).all() for s in q)  # lists too short for k: completed exactly


def test_ann_without_faiss_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    bank = _random_bank(tmp_path, "ivf", {"kind": "ivf", "nlist": 4})
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # as if the ann extra were not installed
    for call in (lambda: check_ann("ivf"), lambda: search(Bank(bank), {"IVC": torch.ones(1, 16)}, k=3),
                 lambda: Bank.open(bank),  # as `medvid draft` opens it: refused before any encoding
                 lambda: _random_bank(tmp_path, "again", {"kind": "ivf"})):
        with pytest.raises(MedvidError, match=r"pip install 'medvid\[ann\]'"):
            call()
    assert search(Bank(bank, SearchOptions(index="exact")), {"IVC": torch.ones(1, 16)}, k=3)["IVC"][1].shape == (1, 3)
    with pytest.raises(MedvidError, match="ann.kind"):
        check_ann("lsh")
    with pytest.raises(MedvidError, match="no approximate index"):
        Bank.open(_random_bank(tmp_path, "plain", None), search=SearchOptions(index="ann"))


def _linear_bank(tmp_path, n: int = 80, dim: int = 8):
    """A bank whose EF is a linear function of the Left Ventricle embedding, plus a binary label."""
    x = _unit(n, dim, 5).astype(np.float64)
    ef = 45 + 40 * x[:, 0] - 20 * x[:, 1]
    studies = pd.DataFrame({"study_key": [f"st_{i}" for i in range(n)], "ef": ef.round(3),
                            "reduced_ef": (ef < 45).astype(float)})
    parts = [("Left Ventricle", SectionRows(x.astype(np.float16), np.arange(n, dtype=np.int32),
                                            [f"lv{i}" for i in range(n)]))]
    return Bank(write_bank(tmp_path / "lin", parts, studies, dim=dim, rows=n,
                           manifest={"model": {"name": "tiny", "fingerprint": "m"}}))


class _Study:
    def __init__(self, key: str, emb: np.ndarray):
        self.study_key, self.sections, self.embeddings = key, ["Left Ventricle"], torch.from_numpy(emb[None]).float()


def test_calibration_chooses_a_linear_head_fitted_on_bank_rows_only(tmp_path):
    from medvid.report.calibrate import calibrate_phenotypes
    from medvid.report.draft import DraftSettings

    bank = _linear_bank(tmp_path)
    val = _unit(30, 8, 6).astype(np.float64)
    ef = 45 + 40 * val[:, 0] - 20 * val[:, 1]
    studies = [_Study(f"v{i}", v) for i, v in enumerate(val)]
    sec = {"ef": "Left Ventricle", "reduced_ef": "Left Ventricle"}

    def run(targets):
        return calibrate_phenotypes(bank, sec, studies, targets, DraftSettings(), select=True)

    thresholds, info, models, heads = run({"ef": ef, "reduced_ef": (ef < 45).astype(float)})
    assert models["ef"]["method"] == "linear" and info["ef"]["mae"] < 2.0  # the kNN vote cannot match a linear truth
    assert set(models["ef"]["validation"]) >= {"knn_k5", "knn_k50", "linear_1"}
    x, y = section_training_set(bank.embeddings, bank.row_study, bank.labels, 0, bank.section_slice("Left Ventricle"))
    w, b = fit_linear(x, y, "numeric", models["ef"]["strength"])  # weights come from the bank's rows alone
    np.testing.assert_array_equal(heads["ef"]["w"], w)
    assert heads["ef"]["b"] == b and 0 <= thresholds["reduced_ef"] <= 1
    # validation labels only choose among candidates: with other validation labels the weights of the chosen
    # strength are still those fitted on the bank's rows
    again = run({"ef": ef + np.random.default_rng(0).normal(0, 3.0, len(ef)), "reduced_ef": (ef < 45).astype(float)})
    assert again[2]["ef"]["validation"] != models["ef"]["validation"]
    np.testing.assert_array_equal(again[3]["ef"]["w"], fit_linear(x, y, "numeric", again[2]["ef"]["strength"])[0])

    bank.set_thresholds(thresholds, {"method": "youden"}, models, heads)
    reopened = Bank(bank.dir)
    assert reopened.phenotype_models["ef"]["method"] == "linear" and set(reopened.heads) == set(heads)
    q = {"Left Ventricle": val[:2]}
    hits = search(reopened, {"Left Ventricle": torch.from_numpy(val[:2]).float()}, k=50)
    out = [draft_phenotypes(reopened, hits, b, {"Left Ventricle": val[b]}, sec, 50, 0.1) for b in range(2)]
    for b, block in enumerate(out):
        assert block["ef"]["method"] == "linear" and block["ef"]["value"] == pytest.approx(ef[b], abs=2.0)
        assert block["reduced_ef"]["kind"] == "binary" and 0 <= block["reduced_ef"]["score"] <= 1
    assert q  # queries per section were given as arrays


def test_linear_heads_are_deterministic():
    x = _unit(50, 8, 7).astype(np.float64)
    y = (x[:, 2] > 0).astype(float)
    a, b = fit_linear(x, y, "binary", 0.1), fit_linear(x, y, "binary", 0.1)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    with pytest.raises(ValueError):
        fit_linear(x, np.ones(50), "binary", 0.1)


def test_auto_precision_uses_bf16_only_for_large_batched_scans(monkeypatch):
    import medvid.report.retrieval as r

    monkeypatch.setattr(r, "native_bf16", lambda: True)
    auto = SearchOptions()
    assert r._use_bf16(auto, r.MIN_BF16_ROWS, r.MIN_BF16_QUERIES)
    assert not r._use_bf16(auto, r.MIN_BF16_ROWS - 1, 64) and not r._use_bf16(auto, 10**6, 1)
    assert r._use_bf16(SearchOptions(precision="bf16"), 10, 1) and not r._use_bf16(SearchOptions(precision="fp32"), 10**6, 64)
    monkeypatch.setattr(r, "native_bf16", lambda: False)  # emulated bfloat16 would be slower than float32
    assert not r._use_bf16(auto, 10**6, 64)
