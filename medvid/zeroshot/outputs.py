"""A zero-shot run's output folder: one prediction CSV per video, written atomically, so a killed run resumes.

``OUT/predictions/<video>.csv`` holds a video's times, native frames and probabilities (to ``DECIMALS``
places), with adaptation on the prompt-only probabilities it started from, and the ground truth when
annotated; ``OUT/embeddings/<video>.npy`` its embeddings (needed by self-training, which reads the
prompt-only probabilities back from the CSVs so a resumed run adapts exactly as a fresh one);
``OUT/settings.json`` the settings that change predictions, so a resume with other settings is refused.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import OmegaConf

from medvid.datasets.cholec80 import Cholec80
from medvid.errors import MedvidError
from medvid.io.video import Video
from medvid.runs import claim_out
from medvid.utils import atomic_path, atomic_write_text, relative_message, write_jsonl
from medvid.zeroshot.embed import VideoEmbedding
from medvid.zeroshot.expansion import Expansion
from medvid.zeroshot.recognise import Recogniser

log = logging.getLogger("medvid")

# Settings that change predictions: a resumed run must match them.
FINGERPRINT_KEYS = ("task", "model_sha256", "dataset", "fps", "clip_frames", "clip_fps", "crop", "scale",
                    "tool_bias", "tool_threshold", "tool_reference", "tool_scale", "smoothing", "smoothing_window",
                    "hmm_stay", "hmm_backward", "calibration", "calibration_strength", "expand_k", "expand_weight",
                    "expand_margin", "corpus_sha256", "prompt_sha256", "adaptation", "adaptation_fraction",
                    "adaptation_c", "adaptation_mix")

Table = dict[str, np.ndarray]  # a prediction CSV read back: column name -> values (strings)


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(settings: Any, prompt_path: Path, corpus: Path | None, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``FINGERPRINT_KEYS`` for a run: its settings (a config with the job's keys, ``model`` the
    model folder), the sampling actually used and the hashes of the model, prompt file and corpus."""
    values = {**OmegaConf.to_container(settings, resolve=True), **sampling}
    values["model_sha256"] = _sha256(sorted(p for p in Path(settings.model).rglob("*") if p.is_file()))
    values["prompt_sha256"] = _sha256([prompt_path])
    values["corpus_sha256"] = None if corpus is None else _sha256(
        sorted(corpus.glob("*.jsonl")) if corpus.is_dir() else [corpus])
    return {k: values[k] for k in FINGERPRINT_KEYS}


def is_annotated(ds: Cholec80, task: str, name: str) -> bool:
    """Whether video ``name`` has the annotations ``task`` is scored against."""
    return ds.has_annotations(name) if task == "phase" else ds.has_tool_annotations(name)


def labels_at(ds: Cholec80, task: str, name: str, times: np.ndarray) -> np.ndarray | None:
    """Ground truth of video ``name`` at ``times`` (phase indices or a tools matrix); None when not
    annotated or the annotations are unusable (logged: the video is then predicted only)."""
    try:
        if not is_annotated(ds, task, name):
            return None
        return ds.phases_at(name, times) if task == "phase" else ds.tools_at(name, times)
    except MedvidError as exc:
        log.error("%s: annotations unusable, predictions only (%s)", name, relative_message(exc, ds.root))
        return None


def phase_table(rec: Recogniser, times: np.ndarray, frames: np.ndarray, probs: np.ndarray, gt: np.ndarray | None,
                prompt_probs: np.ndarray) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of one video's phase CSV: the predictions (``probs``), smoothed when on, and with
    adaptation on the prompt-only probabilities it started from (``prompt_p_*``, ``prompt_index``)."""
    classes = rec.classes
    header = ["time_s", "frame", "pred", "pred_index", *[f"p_{c}" for c in classes]]
    pred = probs.argmax(1)
    cols = [times.round(3), frames, [classes[i] for i in pred], pred, *probs.T.round(5)]
    if rec.settings.smoothing != "none":
        header += ["pred_smoothed_index"]
        cols.append(rec.smooth(probs).argmax(1))
    if rec.adapting:
        header += ["prompt_index", *[f"prompt_p_{c}" for c in classes]]
        cols += [prompt_probs.argmax(1), *prompt_probs.T.round(5)]
    if gt is not None:
        header += ["gt_index"]
        cols.append(gt)
    return header, [list(r) for r in zip(*cols)]


def tool_table(rec: Recogniser, times: np.ndarray, frames: np.ndarray, probs: np.ndarray,
               gt: np.ndarray | None) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of one video's tools CSV: probabilities, presence (0/1) and the ground truth when known."""
    classes = rec.classes
    header = ["time_s", "frame", *[f"p_{c}" for c in classes], *[f"pred_{c}" for c in classes]]
    cols = [times.round(3), frames, *probs.T.round(5), *rec.present(probs).T.astype(int)]
    if gt is not None:
        header += [f"gt_{c}" for c in classes]
        cols += list(gt.T)
    return header, [list(r) for r in zip(*cols)]


def write_table(path: str | os.PathLike, header: list[str], rows: list[list[Any]]) -> None:
    """A prediction CSV, atomically (a killed run leaves no partial file a resume would take as done)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_table(path: str | os.PathLike) -> Table:
    """A prediction CSV as columns of strings (convert with ``astype``)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return {h: np.array([r[j] for r in body]) for j, h in enumerate(header)}


class ResultsFolder:
    """``OUT`` of a zero-shot run (see the module docstring): which videos are done, predicting one more,
    self-training over all, reading the tables back."""

    def __init__(self, out: str | os.PathLike):
        self.root = Path(out)
        self.predictions = self.root / "predictions"
        self.embeddings = self.root / "embeddings"

    def csv(self, name: str) -> Path:
        return self.predictions / f"{name}.csv"

    def claim(self, fingerprint: Mapping[str, Any], overwrite: bool) -> None:
        """Record the settings; refuse to resume a run made with other settings (``overwrite`` starts afresh)."""
        claim_out(self.root, "zero-shot", fingerprint, overwrite=overwrite,
                  has_results=any(self.predictions.glob("*.csv")), own=lambda out: self.predictions.is_dir())
        if overwrite:
            for f in self.predictions.glob("*.csv"):
                f.unlink()

    def done(self, names: Sequence[str]) -> list[str]:
        """The videos of ``names`` that have predictions."""
        return [n for n in names if self.csv(n).exists()]

    def todo(self, names: Sequence[str]) -> list[str]:
        """The videos of ``names`` still to predict."""
        return [n for n in names if not self.csv(n).exists()]

    def write_expansion(self, expansion: Expansion) -> None:
        """``OUT/expanded_prompts.json``: the corpus sentences each class was widened with."""
        atomic_write_text(self.root / "expanded_prompts.json", json.dumps(expansion.neighbours, indent=1))

    def write_errors(self, errors: list[dict]) -> None:
        """``OUT/errors.jsonl``: the videos that could not be predicted, and why."""
        write_jsonl(self.root / "errors.jsonl", errors)

    def predict(self, rec: Recogniser, ds: Cholec80, name: str, save_embedding: bool) -> None:
        """Embed and score video ``name`` of ``ds`` and write its CSV (and embeddings when asked)."""
        with Video(ds.video_path(name)) as video:
            e = rec.embed(video)
        self.write_video(rec, name, e, rec.score(e.emb), labels_at(ds, rec.task, name, e.times), save_embedding)

    def write_video(self, rec: Recogniser, name: str, e: VideoEmbedding, probs: np.ndarray, gt: np.ndarray | None,
                    save_embedding: bool) -> None:
        """One video's CSV of prompt probabilities ``probs`` (embeddings first, so a CSV means both are there)."""
        if rec.task == "phase":
            header, rows = phase_table(rec, e.times, e.frames, probs, gt, probs)
        else:
            header, rows = tool_table(rec, e.times, e.frames, probs, gt)
        if save_embedding:
            with atomic_path(self.embeddings / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, e.emb.numpy().astype(np.float32))
        write_table(self.csv(name), header, rows)

    def adapt(self, rec: Recogniser, names: Sequence[str]) -> int:
        """Self-train over every predicted video of ``names`` from its prompt-only probabilities (read back
        from the CSVs, so a resumed run adapts exactly as a fresh one) and rewrite the CSVs. Returns the
        number of videos adapted."""
        done = self.done(names)
        if not done:
            return 0
        missing = [n for n in done if not (self.embeddings / f"{n}.npy").exists()]
        if missing:
            raise MedvidError(f"adaptation needs the embeddings of every predicted video; missing in "
                              f"{self.embeddings}: {missing[:5]} (rerun with overwrite=true)")
        tables = {n: read_table(self.csv(n)) for n in done}
        prompt = [np.stack([tables[n][f"prompt_p_{c}"].astype(float) for c in rec.classes], 1) for n in done]
        adapted = rec.adapt([np.load(self.embeddings / f"{n}.npy") for n in done], prompt)
        for n, p0, p in zip(done, prompt, adapted):
            t = tables[n]
            gt = t["gt_index"].astype(int) if "gt_index" in t else None
            header, rows = phase_table(rec, t["time_s"].astype(float), t["frame"].astype(int), p, gt, p0)
            write_table(self.csv(n), header, rows)
        return len(done)

    def tables(self, names: Sequence[str]) -> dict[str, Table]:
        """The prediction CSVs of the videos of ``names`` that have one, read back."""
        return {n: read_table(self.csv(n)) for n in self.done(names)}
