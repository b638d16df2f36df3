"""`medvid synth lectures OUT`: synthetic surgical lectures (slides + operative footage) with two ASR transcripts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medvid.runs import claim_out, run_settings
from medvid.config import setting
from medvid.errors import MedvidError
from medvid.synth.lectures import espeak_available, synthesize_lecture
from medvid.synth.surgery import STYLE_CHOICES
from medvid.utils import progress


@dataclass
class Config:
    out: str = setting("synth_lectures", "output folder")
    lectures: int = setting(12, "number of lectures (talk01 ... talkNN, each about 1.5-3 minutes)", min=1)
    seed: int = setting(0, "random seed")
    first_index: int = setting(1, "lectures are numbered talkNN from this number")
    height: int = setting(224, "frame height in pixels")
    width: int = setting(224, "frame width in pixels")
    audio: bool = setting(True, "narration audio via espeak-ng when it is installed (skipped otherwise)")
    min_phases: int = setting(4, "fewest phases shown per lecture")
    max_phases: int = setting(7, "most phases shown per lecture")
    crf: int = setting(23, "libx264 quality")
    style: str = setting("a", "a = the development world; b = a shifted world (look and narration) for zero-shot "
                              "evaluation; random = a world (look, narration, timing) drawn by the seed: every seed "
                              "another world, the same as `synth surgery style=random` with that seed")
    overwrite: bool = setting(False, "false: keep lectures already written (resume)")


def run(cfg: Config) -> dict:
    out = Path(cfg.out)
    if cfg.style not in STYLE_CHOICES:
        raise MedvidError(f"style must be one of {list(STYLE_CHOICES)}, got {cfg.style!r}")
    # Outputs already there are kept (resume) only when made with these settings (recorded beside the truth).
    claim_out(out, "synth lectures", run_settings(cfg, ignore=("out", "lectures", "first_index", "overwrite")),
              overwrite=cfg.overwrite, has_results=any((out / "truth").glob("*.json")), record="truth/settings.json",
              own=lambda o: (o / "truth").is_dir())
    made, skipped, seconds, sentences = [], [], 0.0, 0
    for i in progress(range(cfg.first_index, cfg.first_index + cfg.lectures), desc="synth lectures", unit="lecture"):
        name = f"talk{i:02d}"
        if not cfg.overwrite and (out / "truth" / f"{name}.json").exists():  # written last: the lecture is complete
            skipped.append(name)
            continue
        row = synthesize_lecture(out, i, cfg.seed, size=(cfg.height, cfg.width), audio=cfg.audio, crf=cfg.crf,
                                 phases=(cfg.min_phases, cfg.max_phases), style=cfg.style)
        made.append(name)
        seconds += row["seconds"]
        sentences += row["sentences"]
    return {"out": str(out), "written": made, "skipped_existing": skipped, "seconds_written": round(seconds, 1),
            "sentences_written": sentences, "audio": cfg.audio and espeak_available()}
