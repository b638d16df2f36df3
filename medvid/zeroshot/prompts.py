"""Prompt sets: load them from YAML/JSON, embed them once, ensemble several prompts per class.

A prompt file names its classes in order, each with one or more sentences::

    task: phase                      # phase | tools | findings (informative)
    classes:
      Preparation:
        - "I insert the trocars and get the first look at the gallbladder"
      CalotTriangleDissection: ["...", "..."]
    negatives:                       # tools only, optional: the "absent" sentence per class
      Grasper: ["no grasper is in view"]
    thresholds: {Grasper: 0.5}       # tools only, optional: per-class decision thresholds

Echo findings (EchoCLIP style) use ``findings:``, each either ``binary`` (``prompts`` and
optional ``negatives``) or ``numeric`` with a ``<#>`` placeholder expanded over ``values``
(``{start, stop, step}``, stop inclusive) — see ``expand_numeric``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from medvid.errors import MedvidError

PLACEHOLDER = "<#>"

TextEncoder = Callable[[list[str]], torch.Tensor]


@dataclass
class PromptSet:
    """Classes in order, several prompts each; optional per-class negatives and thresholds."""

    classes: list[str]
    prompts: dict[str, list[str]]
    negatives: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    task: str | None = None

    def all_prompts(self) -> list[str]:
        return [p for c in self.classes for p in self.prompts[c]]


@dataclass
class Finding:
    """One echo finding: ``binary`` (positive / optional negative phrases) or ``numeric``
    (phrases with ``<#>`` and the candidate ``values``)."""

    name: str
    kind: str
    prompts: list[str]
    negatives: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def read_prompt_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML or JSON prompt file (by extension; YAML otherwise) into a mapping."""
    path = Path(path)
    if not path.is_file():
        raise MedvidError(f"{path}: prompt file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MedvidError(f"{path}: not a valid prompt file ({exc})") from exc
    if not isinstance(data, dict):
        raise MedvidError(f"{path}: expected a mapping at the top level")
    return data


def _str_list(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise MedvidError(f"{where}: expected a sentence or a non-empty list of sentences")
    return [s.strip() for s in items]


def load_prompt_set(path: str | os.PathLike, expected: Sequence[str] | None = None) -> PromptSet:
    """Load a class prompt set; with ``expected`` the file must name exactly those classes and
    is returned in that order (so probability columns match the dataset's label indices)."""
    data = read_prompt_file(path)
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise MedvidError(f"{path}: needs a non-empty 'classes' mapping of class -> sentences")
    prompts = {str(c): _str_list(v, f"{path}: class {c!r}") for c, v in classes.items()}
    order = list(prompts)
    if expected is not None:
        missing = [c for c in expected if c not in prompts]
        extra = [c for c in prompts if c not in expected]
        if missing or extra:
            raise MedvidError(f"{path}: classes do not match the dataset's (missing {missing}, unknown {extra})")
        order = list(expected)
    negatives = {str(c): _str_list(v, f"{path}: negatives of {c!r}") for c, v in (data.get("negatives") or {}).items()}
    thresholds = {str(c): float(v) for c, v in (data.get("thresholds") or {}).items()}
    unknown = [c for c in (*negatives, *thresholds) if c not in prompts]
    if unknown:
        raise MedvidError(f"{path}: negatives/thresholds for unknown classes {unknown}")
    return PromptSet(order, prompts, negatives, thresholds, data.get("task"))


def expand_numeric(template: str, values: Sequence[float]) -> list[str]:
    """EchoCLIP-style expansion: ``"LV EJECTION FRACTION IS <#>%"`` → one sentence per value."""
    if PLACEHOLDER not in template:
        raise MedvidError(f"numeric prompt {template!r} has no {PLACEHOLDER} placeholder")
    return [template.replace(PLACEHOLDER, f"{v:g}") for v in values]


def _values(spec: Any, where: str) -> list[float]:
    if isinstance(spec, dict):
        try:
            start, stop, step = float(spec["start"]), float(spec["stop"]), float(spec.get("step", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise MedvidError(f"{where}: values need start, stop (inclusive) and optional step") from exc
        return np.arange(start, stop + step / 2, step).round(6).tolist()
    if isinstance(spec, list) and spec:
        return [float(v) for v in spec]
    raise MedvidError(f"{where}: values must be {{start, stop, step}} or a list of numbers")


def load_findings(path: str | os.PathLike) -> list[Finding]:
    """Load echo findings (``findings:`` mapping of name -> {type, prompts, negatives?, values?})."""
    data = read_prompt_file(path)
    items = data.get("findings")
    if not isinstance(items, dict) or not items:
        raise MedvidError(f"{path}: needs a non-empty 'findings' mapping")
    out = []
    for name, spec in items.items():
        where = f"{path}: finding {name!r}"
        kind = (spec or {}).get("type", "binary")
        if kind not in ("binary", "numeric"):
            raise MedvidError(f"{where}: type must be binary or numeric, got {kind!r}")
        prompts = _str_list(spec.get("prompts"), where)
        if kind == "numeric":
            values = _values(spec.get("values"), where)
            for p in prompts:
                expand_numeric(p, values[:1])  # validates the placeholder
            out.append(Finding(str(name), kind, prompts, values=values))
        else:
            neg = _str_list(spec["negatives"], f"{where} negatives") if spec.get("negatives") else []
            out.append(Finding(str(name), kind, prompts, negatives=neg))
    return out


def model_text_encoder(model: Any, batch_size: int = 64) -> TextEncoder:
    """A ``texts -> [N, D]`` L2-normalised encoder from a model with ``tokenize`` and ``encode_text``."""

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = model.tokenize(texts[i:i + batch_size])
            chunks.append(model.encode_text(tok["input_ids"], tok["attention_mask"]).float())
        return F.normalize(torch.cat(chunks), dim=-1)

    return encode


def ensemble(embeddings: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Average consecutive groups of normalised prompt embeddings (``groups`` = prompts per class)
    and re-normalise: one embedding per class (CLIP prompt ensembling)."""
    if sum(groups) != len(embeddings):
        raise ValueError(f"groups sum to {sum(groups)} but there are {len(embeddings)} embeddings")
    parts = torch.split(F.normalize(embeddings.float(), dim=-1), list(groups))
    return F.normalize(torch.stack([p.mean(0) for p in parts]), dim=-1)


def embed_classes(encode: TextEncoder, prompts: dict[str, list[str]], classes: Sequence[str]) -> torch.Tensor:
    """One ensembled embedding per class ``[C, D]``, encoding every sentence in a single pass."""
    texts = [p for c in classes for p in prompts[c]]
    return ensemble(encode(texts), [len(prompts[c]) for c in classes])
