"""`medvid lectures index ROOT --out DIR`: clip-text pairs (DIR/pairs.jsonl) from lecture videos and transcripts.

Bad lectures (unreadable video, no transcript, transcript longer than the video, malformed
transcript) are listed in DIR/errors.jsonl with the reason; the others are indexed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvid.datasets.frame_type import classify_frames
from medvid.datasets.lectures import PairingRule, find_lectures, load_transcripts, pairs_for_lecture
from medvid.config import setting
from medvid.errors import MedvidError
from medvid.io.video import Video
from medvid.io.timing import span_times
from medvid.runs import claim_out, run_settings
from medvid.utils import progress, relative_message, write_jsonl

log = logging.getLogger("medvid")


@dataclass
class Config:
    root: str = setting("", "folder of lecture videos with their transcripts")
    out: str = setting("lectures_index", "output folder (pairs.jsonl)")
    min_span_s: float = setting(4.0, "anchor sentence widened to at least this span (s)")
    clip_min_s: float = setting(3.0, "clip length drawn in [clip_min_s, clip_max_s] inside the span (s)")
    clip_max_s: float = setting(5.0, "longest clip (s)")
    max_extra: int = setting(2, "overlapping sentences of the other ASR sources kept as extra positives")
    min_words: int = setting(3, "shorter anchor sentences are skipped")
    anchor_sources: list[str] = setting(help="sources used as anchors; empty = every source in turn", factory=list)
    transcript_tolerance_s: float = setting(2.0, "a transcript may overrun the video by this much (clipped); more is "
                                                 "an error")
    drop_slides: bool = setting(False, "drop clips whose sampled frames are all slides")
    frame_type_samples: int = setting(3, "frames per clip classified slide/operative/other (0 = skip unless "
                                         "drop_slides)")
    slide_min_flat: float = setting(0.4, "frame-type threshold: share of flat area for a slide "
                                         "(medvid.datasets.frame_type)")
    operative_min_tissue: float = setting(0.3, "frame-type threshold: share of tissue colour for an operative frame")
    recursive: bool = setting(True, "also look in sub-folders")
    seed: int = setting(0, "random seed (clip placement)")
    overwrite: bool = setting(False, "true: replace pairs an earlier run with other settings wrote in OUT (only a "
                                     "folder medvid lectures index wrote); false: such a run is refused")


def run(cfg: Config) -> dict:
    root, out = Path(cfg.root), Path(cfg.out)
    if not root.is_dir():
        raise MedvidError(f"{root}: not a folder")
    rule = PairingRule(cfg.min_span_s, (cfg.clip_min_s, cfg.clip_max_s), cfg.max_extra, cfg.min_words,
                       tuple(cfg.anchor_sources), cfg.transcript_tolerance_s)
    videos = find_lectures(root, cfg.recursive)
    if not videos:
        raise MedvidError(f"{root}: no lecture videos found ({'recursive' if cfg.recursive else 'top level only'})")
    claim_out(out, "lectures index", run_settings(cfg, ignore=("out", "overwrite")), overwrite=cfg.overwrite,
              own=lambda o: (o / "pairs.jsonl").is_file())
    pairs, errors, dropped = [], [], 0
    for k, path in enumerate(progress(videos, desc="lectures", unit="video")):
        rel = path.relative_to(root).as_posix()
        try:
            with Video(path) as video:
                transcripts = load_transcripts(path, video.duration, rule.transcript_tolerance_s)
                rng = np.random.default_rng([cfg.seed, k])
                for pair in pairs_for_lecture(rel, video.duration, transcripts, rule, rng):
                    if cfg.drop_slides or cfg.frame_type_samples > 0:
                        times = span_times(pair["start"], pair["end"], max(cfg.frame_type_samples, 1))
                        pair["frame_types"] = classify_frames(video.frames_at(times), slide_min_flat=cfg.slide_min_flat,
                                                              operative_min_tissue=cfg.operative_min_tissue)
                        if cfg.drop_slides and all(t == "slide" for t in pair["frame_types"]):
                            dropped += 1
                            continue
                    pairs.append(pair)
        except MedvidError as exc:  # report and go on with the next lecture
            log.error("%s", relative_message(exc, root))
            errors.append({"video": rel, "error": relative_message(exc, root)})
    n = write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "errors.jsonl", errors)
    if not n:
        raise MedvidError(f"0 clip-text pairs from {len(videos)} lecture video(s): {len(errors)} could not be indexed "
                          f"(reasons in {out / 'errors.jsonl'}), {dropped} slide-only pairs dropped; transcripts are "
                          "looked for beside each video as <name>[.<source>].srt|.vtt|.json|.csv")
    sources = sorted({p["source"] for p in pairs})
    return {"videos": len(videos), "indexed": len(videos) - len(errors), "errors": len(errors), "pairs": n,
            "dropped_slide_only": dropped, "sources": sources,
            "with_extra_positives": sum(1 for p in pairs if p["extra_texts"]), "out": str(out / "pairs.jsonl")}
