"""Model cards: the ``README.md`` of a saved model folder, in the Hugging Face model-card structure.

A card is generated from what is known when the folder is written: the model kind, its config and
input contract (always), and — when the saving job passes a ``TrainingRecord`` — the data it saw
(counts per split, no identifiers), its training recipe, the evaluation it measured with chance
baselines, and the command that made it. A folder saved without a record says so plainly; no card
carries placeholders to fill in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from medvid.metrics import chance_recall


@dataclass
class EvalRow:
    """One measured number beside its chance or trivial baseline."""

    metric: str
    value: Optional[float]
    baseline: Optional[float] = None
    baseline_name: str = ""
    split: str = "test"
    n: Optional[int] = None


@dataclass
class TrainingRecord:
    """What a training job knows about the checkpoint it saves."""

    command: str                                   # the command line that reproduces it
    data: str                                      # one-line description of the data (no identifiers)
    counts: dict[str, int] = field(default_factory=dict)      # items per split
    recipe: dict[str, Any] = field(default_factory=dict)      # steps, batch, lr, frozen backbone, sampling ...
    evaluation: list[EvalRow] = field(default_factory=list)


# Family texts by model kind: (title, what it is for, what it is not for).
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "video_text": (
        "medvid video–text model",
        "Research on clinical and surgical video: embedding cine loops / clips and report or transcript text into "
        "one space for retrieval, study-level embeddings for report drafting (`medvid bank build`, `medvid draft`) "
        "and zero-shot phase / tool recognition (`medvid zero-shot`).",
        "Diagnosis or any clinical decision without a clinician's review; use on data unlike its training data "
        "without validation at the target site; reading identifiers out of reports or images."),
    "view_classifier": (
        "medvid view / frame-type classifier",
        "Labelling echocardiography loops with their standard view (or lecture frames with their type) so that "
        "downstream jobs weight each loop by the report section it informs.",
        "Image quality assessment, diagnosis, or views / frame types outside its label list."),
}
_IMPORTED = ("Imported published model (converted by `medvid import`)",
             "Running a published model inside medvid under its own licence and input contract "
             "(see model_cards/imported-published-models.md).",
             "Any use its publishers' licence excludes; clinical decisions.")


def render_card(kind: str, config: dict[str, Any], pretrained_cfg: dict[str, Any],
                record: Optional[TrainingRecord] = None) -> str:
    """The card of a model folder as Markdown (YAML front matter + the Hugging Face sections)."""
    title, intended, out_of_scope = _FAMILIES.get(kind, _IMPORTED)
    name = str(config.get("name") or kind)
    tags = ["medvid", kind, "video"]
    lines = ["---", "library_name: medvid", "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# {name}", "", f"{title} (medvid kind `{kind}`). Load with "
             "`medvid.models.checkpoint.load_pretrained(folder)` or the class's `from_pretrained(folder)`.", "",
             "## Model details", "", *_architecture(kind, config), "",
             "Input contract (`pretrained_cfg` in `config.json`; `model.preprocess()` applies it):", "",
             *([f"- `{k}`: {json.dumps(v)}" for k, v in pretrained_cfg.items()] or ["- none recorded"]), "",
             "## Uses", "", f"**Intended use.** {intended}", "", f"**Out of scope.** {out_of_scope}", ""]
    lines += _training(record) + _evaluation(record)
    lines += ["## Bias, risks and limitations", "",
              "- If the training data came from medvid's synthetic generators (`medvid synth …`, `medvid demo`), the "
              "numbers above show the pipeline works end to end and say nothing about performance on real patients.",
              "- Frame features start from ImageNet (EfficientNet-Lite0) and text from a general-domain encoder "
              "(all-MiniLM-L6-v2) unless the config names others; clinical vocabulary and ultrasound / laparoscopic "
              "images are far from both.",
              "- Performance depends on the sites, machines and populations in the training data; validate on "
              "held-out data from the target site before any use.", "",
              "## Ethical considerations", "",
              "- Not a medical device. Drafted reports and predictions are drafts for a clinician to review, "
              "correct and sign; they must not reach a patient record unreviewed.",
              "- Protected health information: medvid keeps identifiers out of its tables and logs (pseudonymous "
              "keys, scrubbed report text), but a model trained on real reports can memorise phrases; keep "
              "checkpoints trained on patient data inside the institution that holds the data.", ""]
    return "\n".join(lines)


def _architecture(kind: str, c: dict[str, Any]) -> list[str]:
    keys = ("backbone", "temporal", "embed_dim", "num_frames", "input_size", "text_model", "text_model_path",
            "labels", "num_classes")
    rows = [f"- `{k}`: {json.dumps(c[k])}" for k in keys if k in c and c[k] not in (None, "", [])]
    return rows or [f"- kind `{kind}`; full configuration in `config.json`"]


def _training(r: Optional[TrainingRecord]) -> list[str]:
    lines = ["## Training data", ""]
    if r is None:
        return lines + ["This folder was saved outside a medvid training job (from code, or by `medvid import`): "
                        "no training data or recipe was recorded with it.", ""]
    lines += [f"Trained on {r.data}; items per split (no identifiers are recorded):", ""]
    if r.counts:
        lines += ["| split | items |", "|---|---|", *[f"| {k} | {v} |" for k, v in r.counts.items()], ""]
    lines += ["## Training procedure", "", f"Command: `{r.command}`", ""]
    lines += [f"- `{k}`: {json.dumps(v, default=str)}" for k, v in r.recipe.items()] + [""]
    return lines


def _evaluation(r: Optional[TrainingRecord]) -> list[str]:
    lines = ["## Evaluation", ""]
    if r is None or not r.evaluation:
        return lines + ["No evaluation was recorded when this folder was saved.", ""]
    lines += ["Measured by the job that saved this folder, on held-out data:", "",
              "| metric | split | n | value | baseline |", "|---|---|---|---|---|"]
    for e in r.evaluation:
        base = f"{_fmt(e.baseline)} ({e.baseline_name})" if e.baseline is not None else "—"
        lines.append(f"| {e.metric} | {e.split} | {'' if e.n is None else e.n} | {_fmt(e.value)} | {base} |")
    return lines + [""]


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def recipe_from(cfg: Any, *extra: str) -> dict[str, Any]:
    """The training recipe a job config holds (start weights, frozen parts, optimisation), plus ``extra`` fields."""
    train = cfg.train
    init_from = getattr(cfg, "init_from", None)  # its folder name only: a card travels, a full path can identify
    out: dict[str, Any] = {"init": Path(init_from).name if init_from else
                           ("packaged pretrained weights" if cfg.pretrained else "random"),
                           "model": cfg.model}
    for key in ("model_overrides", "frozen_backbone", "locked_text", *extra):
        value = _dotted(cfg, key)
        if value is not None:
            out[key] = value
    out.update({k: getattr(train, k) for k in ("max_steps", "batch_size", "grad_accum", "lr", "weight_decay",
                                                "warmup_steps", "seed") if hasattr(train, k)})
    return out


def _dotted(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
        if cfg is None:
            return None
    if isinstance(cfg, (int, float, str, bool)):
        return cfg
    plain = json.loads(json.dumps(OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else cfg, default=str))
    return plain or None  # an empty mapping says nothing


def retrieval_rows(metrics: dict[str, Any], split: str = "test") -> list[EvalRow]:
    """Recall@1/5 rows (text→video, video→text) of ``retrieval_metrics`` output, beside chance (k / n)."""
    n = metrics.get("n")
    rows = []
    for direction in ("text_to_video", "video_to_text"):
        for k in (1, 5):
            value = metrics.get(f"{direction}_recall@{k}")
            if value is not None:
                rows.append(EvalRow(f"{direction.replace('_to_', '→')} recall@{k}", float(value),
                                    chance_recall(n, k) if n else None, "chance", split, n))
    return rows
