"""The zero-shot recogniser: embed → calibrate → head → adapt → smooth, one definition for every job.

``medvid zero-shot`` and ``medvid probe`` both score zero-shot through ``Recogniser`` with the settings
of ``Recognition`` (its defaults are the zero-shot job's, ``docs/zero_shot.md``), so the same model on
the same videos gets the same zero-shot numbers from both. Per video: embeddings every ``1/fps`` s
(the clip of the model's ``pretrained_cfg`` unless set), scores against prompt embeddings computed
once (optionally widened with the pretraining narration), label-free calibration over the video's
samples (phases) → probabilities recorded to ``DECIMALS`` places. Over all videos of a run: label-free
self-training (phases), then optional temporal smoothing. ``PROMPT_FILES`` is the one table of which
shipped prompt file serves which data set and task.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from medvid.config import config_dir, setting
from medvid.errors import MedvidError
from medvid.io.video import Video
from medvid.models.backbones import preprocess_for
from medvid.transforms.clip import CROPS
from medvid.zeroshot.adaptation import METHODS as ADAPTATION_METHODS, self_train
from medvid.zeroshot.calibration import METHODS as CALIBRATION_METHODS, calibrate_logits
from medvid.zeroshot.classifier import TOOL_REFERENCES, PhaseClassifier, ToolClassifier
from medvid.zeroshot.embed import VideoEmbedding, embed_video, sampling_from_contract
from medvid.zeroshot.expansion import Expansion, corpus_sentences, expand_classes
from medvid.zeroshot.prompts import PromptSet, model_text_encoder
from medvid.zeroshot.smoothing import METHODS as SMOOTHING_METHODS, smooth

log = logging.getLogger("medvid")

TASKS = ("phase", "tools")
# Which shipped prompt file (configs/prompts/) serves which (data set, task).
PROMPT_FILES = {("cholec80", "phase"): "cholec80_phases.yaml", ("autolaparo", "phase"): "autolaparo_phases.yaml",
                ("cholec80", "tools"): "cholec80_tools.yaml", ("echo", "findings"): "echo_findings.yaml"}
# Probabilities are recorded (prediction CSVs) and used downstream (self-training, tool AP) to this many
# places, so a run scored in memory and one resumed from its CSVs give the same numbers.
DECIMALS = 5


def prompt_file(dataset: str, task: str, prompts: str | os.PathLike | None = None) -> Path:
    """The prompt file to use: ``prompts`` when given, else the shipped one for ``(dataset, task)``."""
    if prompts:
        return Path(prompts)
    name = PROMPT_FILES.get((dataset, task))
    if name is None:
        raise MedvidError(f"no shipped prompts for dataset {dataset!r} and task {task!r}; pass a prompt file")
    return config_dir() / "prompts" / name


@dataclass
class Recognition:
    """Settings of the zero-shot recogniser (defaults chosen on the synthetic style-A world only)."""

    clip_frames: Optional[int] = setting(None, "frames per embedding, centred on each time; null = the model's "
                                               "pretrained_cfg (1 when it records no rate)")
    clip_fps: Optional[float] = setting(None, "frame rate inside a clip (integer multiple of fps); null = the "
                                              "model's recorded rate")
    crop: Optional[str] = setting(None, "null = the model's own preprocessing (model.preprocess()); center_square "
                                        "| none (medvid's resize of the whole frame)")
    batch_size: int = setting(32, "frames per backbone call")
    scale: float = setting(100.0, "phases: softmax scale on cosine similarity (SurgVLP)")
    tool_scale: float = setting(10.0, "tools: sigmoid scale; 100 saturates scores to ties at 1.0 that AP cannot "
                                      "rank")
    tool_threshold: float = setting(0.5, "default per-tool threshold (the prompt file's thresholds win)")
    tool_bias: float = setting(0.0, "sigmoid centre for tools without an \"absent\" prompt (tool_reference: "
                                    "absent)")
    tool_reference: str = setting("tools", "tools: a tool's cosine minus the mean over all tool prompts | "
                                           "absent: minus its \"absent\" sentence")
    calibration: str = setting("prior", "phases: none | prior (damp classes predicted everywhere in a video) | "
                                        "centre (remove the video's mean embedding)")
    calibration_strength: float = setting(0.5, "in [0, 1); see docs/zero_shot.md for what a one-phase video "
                                               "keeps")
    expand_corpus: Optional[str] = setting("auto", "narration pairs.jsonl to widen prompts with; auto = the "
                                                   "model's pretraining corpus when present; null = off")
    expand_k: int = setting(16, "nearest corpus sentences added per class (0 = off)")
    expand_weight: float = setting(0.5, "their share in the class embedding")
    expand_margin: float = setting(0.02, "a sentence joins a class only when nearer to it than to any other by "
                                         "this (cosine)")
    adaptation: str = setting("self_train", "phases: none | self_train (label-free pseudo-labels over all videos "
                                            "of the run; docs/zero_shot.md)")
    adaptation_fraction: float = setting(0.2, "the most confident share of each predicted phase taken as "
                                              "pseudo-labels")
    adaptation_c: float = setting(0.1, "L2 strength (C) of the self-trained logistic regression")
    adaptation_mix: float = setting(0.5, "its share in the blend with the prompt probabilities")
    smoothing: str = setting("hmm", "none | moving_average | median | hmm; raw predictions are reported "
                                    "alongside")
    smoothing_window: int = setting(15, "samples, for moving_average / median")
    hmm_stay: float = setting(0.99, "hmm: probability of staying in a phase per sample")
    hmm_backward: float = setting(0.05, "hmm: share of the switching probability that goes to earlier phases")


def check_recognition(s: Any) -> None:
    """Refuse unusable recogniser settings (``Recognition`` or a config holding its keys) before any work."""
    for key, allowed in (("smoothing", SMOOTHING_METHODS), ("crop", (None, *CROPS)),
                         ("calibration", CALIBRATION_METHODS), ("tool_reference", TOOL_REFERENCES),
                         ("adaptation", ADAPTATION_METHODS)):
        if getattr(s, key) not in allowed:
            raise MedvidError(f"{key} must be one of {[a for a in allowed if a is not None]}, got {getattr(s, key)!r}")
    if not 0.0 <= s.calibration_strength < 1.0:
        raise MedvidError(f"calibration_strength must be in [0, 1), got {s.calibration_strength}")
    if not (0.0 < s.adaptation_fraction <= 1.0 and s.adaptation_c > 0.0 and 0.0 <= s.adaptation_mix <= 1.0):
        raise MedvidError("need 0 < adaptation_fraction <= 1, adaptation_c > 0 and 0 <= adaptation_mix <= 1, got "
                          f"{s.adaptation_fraction}, {s.adaptation_c}, {s.adaptation_mix}")
    if s.expand_k < 0 or not 0.0 <= s.expand_weight <= 1.0:
        raise MedvidError(f"need expand_k >= 0 and 0 <= expand_weight <= 1, got {s.expand_k}, {s.expand_weight}")


PRESET_MODEL_KEY = "model_preset"  # in a preset: the ``pretrained_cfg.preset`` the model must record


def apply_preset(cfg: DictConfig, defaults: DictConfig) -> DictConfig:
    """``cfg`` with the settings of its ``preset`` (an entry of ``cfg.presets``; none: ``cfg`` unchanged).

    A preset is a published protocol: it fixes the settings it names. A setting the run changed from its
    default (``defaults``: the job's config without the user's layers) to another value than the preset's
    is an error naming both, so no one reads a run as the published protocol when it was not. A preset's
    ``prompts`` name a file in the shipped ``configs/prompts/`` unless a path is given."""
    if not cfg.get("preset"):
        return cfg
    presets = cfg.get("presets") or {}
    if cfg.preset not in presets:
        raise MedvidError(f"preset must be one of {sorted(presets)}, got {cfg.preset!r}")
    values = {k: v for k, v in OmegaConf.to_container(presets[cfg.preset], resolve=True).items()
              if k != PRESET_MODEL_KEY}
    if values.get("prompts") and not Path(values["prompts"]).parent.parts:
        values["prompts"] = str(config_dir() / "prompts" / values["prompts"])
    if unknown := sorted(k for k in values if k not in cfg):
        raise MedvidError(f"preset {cfg.preset!r} names unknown settings {unknown}")
    clashes = [f"{k}={cfg[k]}" for k, v in values.items() if cfg[k] not in (v, defaults.get(k))]
    if clashes:
        raise MedvidError(f"preset={cfg.preset} fixes {', '.join(f'{k}={values[k]}' for k in values)}; this run "
                          f"sets {', '.join(clashes)}: drop those settings or the preset")
    return OmegaConf.merge(cfg, values)


def check_model_preset(cfg: Any, model: Any) -> None:
    """Refuse a model whose preprocessing is not the one the run's preset requires (``model_preset``)."""
    need = (cfg.get("presets") or {}).get(cfg.get("preset") or "", {}).get(PRESET_MODEL_KEY)
    if need and model.pretrained_cfg.preset != need:
        raise MedvidError(f"preset={cfg.preset} needs a model whose pretrained_cfg records preset {need!r} (the "
                          f"publisher's frame preprocessing; `medvid import {need}` writes it), got "
                          f"{model.pretrained_cfg.preset!r}")


def corpus_path(s: Any, model_dir: str | os.PathLike) -> Path | None:
    """The narration corpus for prompt expansion: ``expand_corpus``, or with ``auto`` the ``lectures.pairs``
    the model was pretrained on (its ``train_config.yaml``) when that file is still there."""
    if not s.expand_corpus or s.expand_k == 0:
        return None
    if s.expand_corpus != "auto":
        if not Path(s.expand_corpus).exists():
            raise MedvidError(f"expand_corpus does not exist: {s.expand_corpus}")
        return Path(s.expand_corpus)
    train_cfg = Path(model_dir) / "train_config.yaml"
    pairs = (OmegaConf.load(train_cfg).get("lectures") or {}).get("pairs") if train_cfg.is_file() else None
    if pairs and (train_cfg.parent / pairs).is_file():  # recorded relative to the config's folder (save_config)
        return train_cfg.parent / pairs
    log.warning("expand_corpus=auto: the model's pretraining corpus is not available here; class prompts are "
                "used as written (pass expand_corpus=PAIRS.jsonl to widen them)")
    return None


@dataclass
class Recognised:
    """One video's zero-shot result: its ``embedding`` (times, native frames, ``emb``), the prompt
    probabilities ``prompt_probs`` and the final ``probs`` (after adaptation; equal without it), ``[N, C]``."""

    embedding: VideoEmbedding
    prompt_probs: np.ndarray
    probs: np.ndarray


class Recogniser:
    """Zero-shot phase or tool recognition of videos by one model (see the module docstring).

    The head (prompt embeddings, widened by ``corpus`` when given) is built on first use, so a run whose
    videos are all done already encodes no prompt."""

    def __init__(self, model: Any, task: str, prompts: PromptSet, settings: Any, fps: float = 1.0,
                 corpus: Path | None = None):
        if task not in TASKS:
            raise MedvidError(f"task must be one of {TASKS}, got {task!r}")
        self.model, self.task, self.prompts, self.settings, self.fps, self.corpus = (
            model, task, prompts, settings, fps, corpus)
        self.sampling = sampling_from_contract(model.pretrained_cfg, fps, settings.clip_frames, settings.clip_fps)
        self.expansion: Expansion | None = None
        self.expansion_note: str | None = None

    @property
    def classes(self) -> list[str]:
        return self.prompts.classes

    @property
    def adapting(self) -> bool:
        """Phases self-train over the run's videos (``adaptation`` on)."""
        return self.task == "phase" and self.settings.adaptation != "none"

    @cached_property
    def head(self) -> PhaseClassifier | ToolClassifier:
        s, encode = self.settings, model_text_encoder(self.model)
        head = (PhaseClassifier.from_prompts(self.prompts, encode, s.scale) if self.task == "phase" else
                ToolClassifier.from_prompts(self.prompts, encode, s.tool_scale, s.tool_threshold, s.tool_bias,
                                            s.tool_reference))
        if self.corpus is not None:
            sentences = corpus_sentences(self.corpus)
            self.expansion = expand_classes(head.class_emb, self.classes, sentences, encode, s.expand_k,
                                            s.expand_weight, s.expand_margin)
            head.class_emb = self.expansion.class_emb
            self.expansion_note = (f"up to {s.expand_k} nearest of {len(sentences)} corpus sentences per class "
                                   f"(weight {s.expand_weight:g}; "
                                   f"{sum(map(len, self.expansion.neighbours.values()))} taken)")
        return head

    def embed(self, video: Video) -> VideoEmbedding:
        """Embeddings every ``1/fps`` s of one open video (the sampling of ``self.sampling``)."""
        s = self.settings
        preprocess = (preprocess_for(replace(self.model.pretrained_cfg, crop=s.crop)) if s.crop
                      else self.model.preprocess())
        e = embed_video(self.model, video, fps=self.fps, clip_frames=self.sampling["clip_frames"],
                        clip_fps=self.sampling["clip_fps"], preprocess=preprocess, batch_size=s.batch_size)
        if len(e.times) == 0:
            raise MedvidError("video shorter than one sampling interval")
        return e

    @torch.no_grad()
    def score(self, emb: torch.Tensor) -> np.ndarray:
        """Prompt probabilities ``[N, C]`` of one video's embeddings, to ``DECIMALS`` places: phases calibrated
        over the video's samples (softmax), tools one sigmoid per tool."""
        s = self.settings
        if self.task == "phase":
            p = calibrate_logits(emb, self.head.logits, s.calibration, s.calibration_strength).softmax(-1)
        else:
            p = self.head.probs(emb)
        return np.round(p.numpy().astype(np.float64), DECIMALS)

    def present(self, probs: np.ndarray) -> np.ndarray:
        """Tools predicted present: probability at or above the tool's threshold."""
        return probs >= self.head.thresholds.numpy()

    def adapt(self, embeddings: Sequence[np.ndarray], prompt_probs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities after label-free self-training over all the run's videos (phases with adaptation
        on), else the prompt probabilities."""
        if not self.adapting:
            return [np.asarray(p, dtype=np.float64) for p in prompt_probs]
        s = self.settings
        return self_train(embeddings, [np.round(np.asarray(p, dtype=np.float64), DECIMALS) for p in prompt_probs],
                          s.adaptation_fraction, s.adaptation_c, s.adaptation_mix)

    def smooth(self, probs: np.ndarray) -> np.ndarray:
        """Phase probabilities after the temporal smoothing of ``smoothing`` (unchanged with ``none``)."""
        s = self.settings
        return smooth(probs, s.smoothing, s.smoothing_window, s.hmm_stay, s.hmm_backward)

    def recognise(self, videos: Sequence[str | os.PathLike]) -> list[Recognised]:
        """Every stage over a run of videos held in memory (the zero-shot job does the same through its
        resumable CSVs)."""
        embs, prompt_probs = [], []
        for path in videos:
            with Video(path) as video:
                e = self.embed(video)
            embs.append(e)
            prompt_probs.append(self.score(e.emb))
        adapted = self.adapt([e.emb.numpy().astype(np.float32) for e in embs], prompt_probs)
        return [Recognised(e, p0, p) for e, p0, p in zip(embs, prompt_probs, adapted)]
