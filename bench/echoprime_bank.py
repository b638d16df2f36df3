"""EchoPrime candidate bank: medvid's import / open / draft beside a replay of EchoPrime's own start-up, in one
process.

A stand-in EchoPrime folder is written to ``--work`` (``--candidates`` random float32 embeddings of 512, split
into p1/p2 as released; phrase-encoded reports of ~10 phrases over a synthetic 15-section ``all_phr.json``;
labels for 3 phenotypes). Then, in this order:

* **EchoPrime start-up, replayed**: ``pandas.read_pickle`` of the reports, every report decoded with
  ``phrase_decode``'s semantics (the section list rebuilt per phrase, as its code does), the embeddings
  ``torch.load``-ed and concatenated, labels and section table read;
* **EchoPrime draft, replayed**: one study of ``--videos`` videos: per section the weighted mean, the full
  ``q @ C.T``, argmax / ``extract_section`` / next; ``predict_metrics``' top-50;
* **medvid**: ``import_echoprime_bank`` (once per release), ``EchoPrimeBank`` open, one study drafted
  (``EchoPrimeDrafter``, cold and warm page cache) and the per-study time in a batch of ``--batch``.

The replayed and medvid sections are compared (``sections_equal``). Usage:
``python bench/echoprime_bank.py --work /tmp/epbench [--candidates 1200000] [--batch 16]``; prints JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medvid.report.echoprime_bank import EchoPrimeBank, import_echoprime_bank
from medvid.report.echoprime_draft import EchoPrimeDrafter
from medvid.report.encode import EncodedStudy
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

SECTIONS = list(ECHO_SECTIONS[:15])
PHENOTYPES = {"Left Ventricle": ["ejection_fraction"], "Right Ventricle": ["rv_dilation"],
              "Left Atrium": ["la_dilation"]}


def _phrases() -> dict:
    return {s: {"a": [f"{s} finding {j} is <numerical> units." if j % 3 == 0 else f"{s} finding {j}."
                      for j in range(30)], "b": [f"{s} extra {j}." for j in range(10)]} for s in SECTIONS}


def make_folder(root: Path, n: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cand, assets = root / "model_data" / "candidates_data", root / "assets"
    cand.mkdir(parents=True, exist_ok=True)
    assets.mkdir(exist_ok=True)
    half = n // 2
    for name, rows in (("p1", half), ("p2", n - half)):
        torch.save(torch.from_numpy(rng.standard_normal((rows, dim), dtype=np.float32)),
                   cand / f"candidate_embeddings_{name}.pt")
    studies = np.arange(n) + 10_000_000
    pd.DataFrame({"Study": studies}).to_csv(cand / "candidate_studies.csv", index=False)
    reports = []
    for i in range(n):
        secs = np.sort(rng.choice(15, size=5, replace=False))
        reports.append([(int(s), int(p), int(v)) for s in secs
                        for p, v in zip(rng.choice(40, size=2, replace=False), rng.integers(0, 100, 2))])
    pd.to_pickle(reports, cand / "candidate_reports.pkl")
    del reports
    keys = studies.tolist()
    pd.to_pickle({ph: dict(zip(keys, rng.uniform(0, 1, n).round(2).tolist()))
                  for phs in PHENOTYPES.values() for ph in phs}, cand / "candidate_labels.pkl")
    mil = pd.DataFrame(rng.uniform(0, 1, (15, len(ECHO_VIEWS))), columns=list(ECHO_VIEWS))
    mil.insert(0, "Section", SECTIONS)
    mil.to_csv(assets / "MIL_weights.csv", index=False)
    (assets / "all_phr.json").write_text(json.dumps(_phrases()))
    (assets / "per_section.json").write_text(json.dumps({"ejection_fraction": {"mode": "regression"}}))
    pd.to_pickle(PHENOTYPES, assets / "section_to_phenotypes.pkl")
    pd.DataFrame({"feature": ["rv_dilation", "la_dilation"], "threshold": [0.5, 0.5]}).to_csv(
        assets / "roc_thresholds.csv")


def _decode(ids, table: dict) -> str:
    """phrase_decode's semantics, written as its code runs (the section list rebuilt for every phrase)."""
    report, current = "", -1
    for sec, idx, value in ids:
        section = list(table.keys())[sec]
        if sec != current:
            if current != -1:
                report += "[SEP] "
            report += section + ": "
            current = sec
        phr = table[section][idx]
        if "<numerical>" in phr:
            phr = phr.replace("<numerical>", str(value))
        elif "<string>" in phr:
            phr = phr.replace("<string>", str(value))
        report += phr + " "
    return report + "[SEP]"


def replay_startup(root: Path) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    phrases = json.loads((root / "assets/all_phr.json").read_text())
    table = {k: [p for g in v.values() for p in g] for k, v in phrases.items()}
    mil = pd.read_csv(root / "assets/MIL_weights.csv")
    cand = root / "model_data/candidates_data"
    studies = list(pd.read_csv(cand / "candidate_studies.csv")["Study"])
    emb = torch.cat([torch.load(cand / f"candidate_embeddings_{p}.pt") for p in ("p1", "p2")])
    reports = pd.read_pickle(cand / "candidate_reports.pkl")
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    texts = [_decode(r, table) for r in reports]
    t_decode = time.perf_counter() - t1
    del reports
    labels = pd.read_pickle(cand / "candidate_labels.pkl")
    s2p = pd.read_pickle(root / "assets/section_to_phenotypes.pkl")
    state = {"emb": emb, "texts": texts, "studies": studies, "labels": labels, "s2p": s2p,
             "weights": mil.iloc[:, 1:].to_numpy(), "sections": list(mil["Section"])}
    return state, {"load_s": round(t_load, 2), "decode_s": round(t_decode, 2),
                   "total_s": round(time.perf_counter() - t0, 2)}


def replay_draft(state: dict, videos: torch.Tensor, views: list[int]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out, per = {}, []
    for s, sec in enumerate(state["sections"]):
        w = torch.tensor([state["weights"][s][v] for v in views], dtype=torch.float).unsqueeze(1)
        x = videos * w
        q = torch.nn.functional.normalize(torch.mean(x, dim=0), dim=0)
        sims = q @ state["emb"].T
        while True:
            i = int(torch.argmax(sims))
            m = re.search(rf"{sec}(.*?)(?=\[SEP\])", state["texts"][i])
            if m:
                out[sec] = f"{sec}{m.group(1)}[SEP]"
                break
            sims[i] = float("-inf")
        per.append(torch.sum(x, dim=0))
    top = torch.topk(torch.nn.functional.normalize(torch.stack(per)) @ state["emb"].T, k=50, dim=1).indices
    for s, (_, phs) in enumerate(state["s2p"].items()):
        for ph in phs:
            np.nanmean([state["labels"][ph][state["studies"][c]] for c in top[s]
                        if state["studies"][c] in state["labels"][ph]])
    return out, time.perf_counter() - t0


def _study(key: str, videos: torch.Tensor, views: list[int]) -> EncodedStudy:
    return EncodedStudy(key, [f"v{i}" for i in range(len(views))], [ECHO_VIEWS[v] for v in views],
                        [1.0] * len(views), ["classifier"] * len(views), [], torch.zeros(0), torch.zeros(0),
                        torch.zeros(0), videos=videos)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--candidates", type=int, default=1_200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep the stand-in folder and bank")
    a = ap.parse_args()
    root, bank_dir = a.work / "EchoPrime", a.work / "bank"
    t0 = time.perf_counter()
    make_folder(root, a.candidates, a.dim)
    result: dict = {"candidates": a.candidates, "dim": a.dim, "videos_per_study": a.videos, "torch_threads":
                    torch.get_num_threads(), "stand_in_write_s": round(time.perf_counter() - t0, 1)}
    rng = np.random.default_rng(1)
    studies = [(torch.from_numpy(rng.standard_normal((a.videos, a.dim), dtype=np.float32)),
                rng.integers(0, len(ECHO_VIEWS), a.videos).tolist()) for _ in range(a.batch)]

    state, result["echoprime_startup"] = replay_startup(root)
    want, t_replay = replay_draft(state, *studies[0])
    result["echoprime_draft_one_s"] = round(t_replay, 3)
    del state
    gc.collect()

    t0 = time.perf_counter()
    import_echoprime_bank(root, bank_dir)
    result["medvid_import_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    bank = EchoPrimeBank(bank_dir)
    result["medvid_open_s"] = round(time.perf_counter() - t0, 4)
    drafter = EchoPrimeDrafter(bank, ECHO_VIEWS)
    times = []
    for _ in range(2):  # cold, then warm page cache
        t0 = time.perf_counter()
        got = drafter.draft([_study("s0", *studies[0])])[0]
        times.append(round(time.perf_counter() - t0, 3))
    result["medvid_draft_one_s"] = {"cold": times[0], "warm": times[1]}
    result["sections_equal"] = {s: d["echoprime_text"] for s, d in got["sections"].items()} == want
    t0 = time.perf_counter()
    drafter.draft([_study(f"s{i}", *s) for i, s in enumerate(studies)])
    result["medvid_draft_per_study_in_batch_s"] = round((time.perf_counter() - t0) / a.batch, 3)
    su = result["echoprime_startup"]["total_s"]
    result["ratios"] = {"startup_vs_open": round(su / max(result["medvid_open_s"], 1e-6), 1),
                        "draft_one_warm": round(t_replay / times[1], 2),
                        "draft_batched": round(t_replay / result["medvid_draft_per_study_in_batch_s"], 2)}
    if not a.keep:
        shutil.rmtree(root), shutil.rmtree(bank_dir)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
