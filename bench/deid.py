"""Report de-identification: identifier recall, clinical-text damage and throughput of the report scrubber
against de-identification libraries, on the synthetic corpus of ``tests/deid_corpus.py``.

Scrubbers: ``medvid`` (``medvid.report.scrub.scrub_text``), and where installed ``presidio`` (presidio-analyzer's
predefined recognizers; its spaCy NER model cannot be installed offline, so a blank spaCy pipeline: patterns only),
``scrubadub`` (default detectors) and ``philter`` (philter-lite's UCSF configuration; it needs NLTK's POS tagger,
whose data is a download, so every token is tagged ``NNP``: the most it can catch). Each report set is generated
from a seed and Faker locales (``--set dev`` is what the scrubber was developed on, ``held_out`` was never looked
at). Leaked identifiers are never printed, only counted.

Usage: ``python bench/deid.py [--set held_out] [--reports 400] [--scrubbers medvid presidio scrubadub philter]``.
Prints one JSON line per scrubber (``setup_s``: loading it and a first call; ``reports_per_s`` after that).
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import deid_corpus  # noqa: E402  (a test helper module: the corpus generator)


def _medvid() -> Callable[[str], str]:
    from medvid.report.scrub import scrub_text

    return lambda text: scrub_text(text).text


def _redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with each (merged) span replaced by ``[KIND]``."""
    out, last = [], 0
    for start, end, kind in sorted(spans):
        if start < last:
            continue
        out += [text[last:start], f"[{kind.upper().replace('_', '')}]"]
        last = end
    return "".join(out + [text[last:]])


def _presidio() -> Callable[[str], str]:
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.nlp = {"en": spacy.blank("en")}  # no NER model offline: the pattern recognizers only
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    return lambda text: _redact(text, [(r.start, r.end, r.entity_type) for r in analyzer.analyze(text, language="en")])


def _scrubadub() -> Callable[[str], str]:
    import scrubadub

    scrubber = scrubadub.Scrubber()
    return lambda text: _redact(text, [(f.beg, f.end, f.type) for f in scrubber.iter_filth(text)])


def _philter() -> Callable[[str], str]:
    import nltk
    import philter_lite

    nltk.pos_tag = lambda tokens: [(t, "NNP") for t in tokens]  # the tagger's data is a download
    config = importlib.resources.files("philter_lite") / "configs" / "philter_delta.toml"
    filters = philter_lite.load_filters(str(config))

    def scrub(text: str) -> str:
        _, _, tracker = philter_lite.detect_phi(text, filters)
        return _redact(text, [(p.start, p.stop, p.phi_type) for p in tracker.phi])
    return scrub


SCRUBBERS = {"medvid": _medvid, "presidio": _presidio, "scrubadub": _scrubadub, "philter": _philter}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("dev", "held_out"), default="held_out")
    parser.add_argument("--reports", type=int, default=400)
    parser.add_argument("--scrubbers", nargs="+", choices=sorted(SCRUBBERS), default=list(SCRUBBERS))
    args = parser.parse_args()
    params = deid_corpus.HELD_OUT if args.set == "held_out" else deid_corpus.DEV
    reports = deid_corpus.generate(args.reports, **params)
    for name in args.scrubbers:
        t0 = time.perf_counter()
        try:
            scrub = SCRUBBERS[name]()
        except ImportError as exc:
            print(json.dumps({"scrubber": name, "skipped": f"not installed: {exc.name}"}))
            continue
        scrub("Warm-up with Sarah.")  # loads word lists and models: timed apart from the reports
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        scrubbed = {r.text: scrub(r.text) for r in reports}
        seconds = time.perf_counter() - t0
        result = deid_corpus.score(reports, scrubbed.__getitem__)
        leaks = result.pop("leaks")
        print(json.dumps({"scrubber": name, "set": args.set, "locales": params["locales"], "seed": params["seed"],
                          **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
                          "leaked": len(leaks), "setup_s": round(setup, 1),
                          "reports_per_s": round(len(reports) / seconds, 1)}))


if __name__ == "__main__":
    main()
