"""Drafts that contradict their own calls, and section quality, before and after consistent section text.

On a ``medvid demo`` folder (``echo/``: ingest, synth/dicom, pretrain/model, view_classifier/model, bank, and
the frame-feature cache pretrain/cache/echo when present), in one
process, the test studies are drafted twice from the same bank with the same calls:

* ``before``: each section the nearest neighbour's text (``drafting.consistent=false``, no prior text: drafting
  before issue 26);
* ``after``: the defaults: text consistent with the calls (conflicts flagged), and the bank's prior text for the
  sections where retrieval did not beat it on the validation split (chosen here exactly as ``bank calibrate``
  chooses it, :func:`medvid.report.calibrate.choose_text_sources`; the test split is never looked at).

Prints JSON: per variant the contradictions between a section text and a call of its phenotypes (all, and silent =
not flagged as a conflict) per phenotype, and per section the token F1 and finding agreement beside the random
neighbour baseline of ``medvid evaluate drafts`` (same seed), and that baseline's expectation (the mean over every
training report's text instead of one random draw). Usage:
``python bench/draft_consistency.py --world DEMO_OUT --work /tmp/dc_bench``.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path


def _encode(world: Path, keys: list[str]):
    from medvid.report.encode import Encoding, encode_studies, load_encoder, loop_clips

    import torch

    echo = world / "echo"
    cache_dir = echo / "pretrain" / "cache" / "echo"  # the demo's frame features; a world without them decodes
    enc = Encoding(num_workers=0, feature_cache=str(cache_dir) if cache_dir.is_dir() else None)

    encoder = load_encoder(echo / "pretrain" / "model", echo / "view_classifier" / "model", torch.device("cpu"),
                           enc.precision)
    loops, cache = loop_clips(encoder, echo / "ingest", echo / "synth" / "dicom", keys, enc)
    return [s for s in encode_studies(encoder, loops, loop_batch=enc.loop_batch, num_workers=0, feature_cache=cache)
            if not isinstance(s, dict)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="a medvid demo OUT folder")
    ap.add_argument("--work", type=Path, required=True, help="where the two drafts.jsonl go")
    args = ap.parse_args()

    from medvid.io.ingest_folder import IngestFolder, split_rows
    from medvid.io.reports import parse_sections, read_reports
    from medvid.report.bank import Bank
    from medvid.report.calibrate import choose_text_sources
    from medvid.report.draft import DraftSettings, Drafter
    from medvid.report.evaluate import evaluate_drafts
    from medvid.report.retrieval import patients_of
    from medvid.report.section_text import contradictions

    ingest = args.world / "echo" / "ingest"
    videos = IngestFolder(ingest).read_videos()
    patients = patients_of(videos)
    bank = Bank(args.world / "echo" / "bank")
    settings = DraftSettings()
    reports = read_reports(IngestFolder(ingest).reports, key="study_key").set_index("study_key")
    val = _encode(args.world, sorted(set(split_rows(videos, "val", ingest)["study_key"])))
    truth = {s.study_key: parse_sections(str(reports.at[s.study_key, "report"])) for s in val}
    sources = {s: c["text_source"] for s, c in choose_text_sources(bank, val, truth, settings, patients).items()}
    test = _encode(args.world, sorted(set(split_rows(videos, "test", ingest)["study_key"])))
    variants = {"before": Drafter(bank, replace(settings, consistent=False), patients=patients, text_sources={}),
                "after": Drafter(bank, settings, patients=patients, text_sources=sources)}
    args.work.mkdir(parents=True, exist_ok=True)
    out = {"world": str(args.world), "test_studies": len(test), "val_studies": len(val),
           "prior_text_sections": sorted(s for s, v in sources.items() if v == "prior")}
    for name, drafter in variants.items():
        drafts = drafter.draft(test)
        path = args.work / f"{name}.jsonl"
        path.write_text("".join(json.dumps({**d, "in_bank": False}) + "\n" for d in drafts))
        found = [c for d in drafts for c in contradictions(d, drafter.pheno_section)]
        metrics = evaluate_drafts(path, ingest)["sections"]
        out[name] = {
            "contradictions": len(found), "silent": sum(not c["flagged"] for c in found),
            "by_phenotype": dict(Counter(c["phenotype"] for c in found)),
            "conflicts_flagged": sum(bool(s.get("conflict")) for d in drafts for s in d["sections"].values()),
            "sections": {s: {"token_f1": round(v["token_f1"], 3), "finding_agreement": round(v["finding_agreement"], 3),
                             "random_token_f1": round(metrics["baseline_random_neighbour"]["sections"][s]["token_f1"], 3),
                             "random_finding_agreement": round(
                                 metrics["baseline_random_neighbour"]["sections"][s]["finding_agreement"], 3)}
                         for s, v in metrics["draft"]["sections"].items()},
            "macro_token_f1": round(metrics["draft"]["token_f1"], 3),
            "macro_finding_agreement": round(metrics["draft"]["finding_agreement"], 3)}
    out["random_token_f1_expected"] = _expected_random_f1(reports, split_rows(videos, "train", ingest), test)
    print(json.dumps(out, indent=1))


def _expected_random_f1(reports, train_videos, test) -> dict[str, float]:
    """Per section, the expected token F1 of a random training report's text (the mean over all of them, where
    ``medvid evaluate drafts`` draws one): the random baseline without the noise of its single draw."""
    import numpy as np

    from medvid.io.reports import parse_sections
    from medvid.report.evaluate import token_f1

    pool = [parse_sections(str(reports.at[k, "report"])) for k in sorted(set(train_videos["study_key"]))
            if k in reports.index]
    scores: dict[str, list[float]] = {}
    for st in test:
        for name, ref in parse_sections(str(reports.at[st.study_key, "report"])).items():
            texts = [p[name] for p in pool if name in p]
            if texts:
                scores.setdefault(name, []).append(float(np.mean([token_f1(t, ref) for t in texts])))
    return {name: round(float(np.mean(v)), 3) for name, v in scores.items()}


if __name__ == "__main__":
    main()
