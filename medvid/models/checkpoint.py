"""medvid's one checkpoint format, and the registry of model kinds it can hold.

A saved folder holds ``model.safetensors`` (all weights), ``config.json`` (``format: medvid``,
``kind``, the kind's config, ``pretrained_cfg``) and ``README.md``; a kind may add files (a
``VideoTextModel`` writes ``text/``: the Hugging Face config and tokenizer), so loading needs
nothing outside the folder and never unpickles code.

Each model kind registers itself with ``register_kind(name, cls, build)``: saving looks the kind
up by the model's class, loading dispatches on the saved ``kind``. A registered class implements
the ``Pretrained`` interface (``config``, ``pretrained_cfg``, ``checkpoint_config``,
``save_checkpoint_files``). This module imports no model module, so there is no import circle;
``medvid.models`` imports the built-in kinds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models.card import TrainingRecord, render_card
from medvid.transforms.contract import PretrainedCfg, Sampling
from medvid.utils import atomic_dir

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"

T = TypeVar("T", bound="Pretrained")
Builder = Callable[[dict[str, Any], Path], nn.Module]


@dataclass(frozen=True)
class ModelKind:
    """A registered kind: its class and ``build(config, folder)`` → the architecture (weights not read)."""

    name: str
    cls: type
    build: Builder


_KINDS: dict[str, ModelKind] = {}


def register_kind(name: str, cls: type, build: Builder | None = None) -> type:
    """Register ``cls`` as model kind ``name``; ``build`` defaults to ``cls.from_checkpoint_config``."""
    if name in _KINDS and _KINDS[name].cls is not cls:
        raise MedvidError(f"model kind '{name}' is already registered for {_KINDS[name].cls.__name__}")
    _KINDS[name] = ModelKind(name, cls, build or cls.from_checkpoint_config)
    cls.checkpoint_kind = name
    return cls


def model_kinds() -> list[str]:
    """Names of the registered model kinds."""
    return sorted(_KINDS)


def kind_of(model: nn.Module) -> ModelKind:
    """The registered kind of ``model`` (by its class), or a ``MedvidError`` naming the known kinds."""
    kind = _KINDS.get(getattr(type(model), "checkpoint_kind", ""))
    if kind is None or not isinstance(model, kind.cls):
        raise MedvidError(f"{type(model).__name__} is not a registered model kind; known: {', '.join(model_kinds())}")
    return kind


class Pretrained:
    """Mixin for model kinds: ``save_pretrained`` / ``from_pretrained`` through this module.

    ``config`` is what rebuilds the architecture (``checkpoint_config`` may make it portable),
    ``pretrained_cfg`` the input contract that travels with the weights (``PretrainedCfg``).
    """

    checkpoint_kind: str = ""
    config: dict[str, Any]
    pretrained_cfg: PretrainedCfg

    def checkpoint_config(self) -> dict[str, Any]:
        """The config written to ``config.json`` (no local paths)."""
        return dict(self.config)

    def save_checkpoint_files(self, folder: Path) -> None:
        """Write files besides the weights that loading needs (default: none)."""

    @classmethod
    def from_checkpoint_config(cls: type[T], config: dict[str, Any], folder: Path) -> T:
        """The architecture described by ``config`` (weights are loaded afterwards)."""
        raise NotImplementedError(f"{cls.__name__} has no from_checkpoint_config")

    def save_pretrained(self, directory: str | Path, record: TrainingRecord | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` + ``README.md`` (see ``save_pretrained``)."""
        return save_pretrained(self, directory, record)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, map_location: str | torch.device = "cpu") -> T:
        """Load a folder written by ``save_pretrained``; it must hold an instance of ``cls``."""
        model = load_pretrained(directory, map_location)
        if not isinstance(model, cls):
            raise MedvidError(f"{directory} holds a '{kind_of(model).name}' model ({type(model).__name__}); "
                              f"this needs a {cls.__name__}")
        return model


def is_checkpoint(directory: str | Path) -> bool:
    """True when ``directory`` holds a medvid checkpoint ``config.json``."""
    try:
        read_config(directory)
    except (MedvidError, OSError, ValueError):
        return False
    return True


def save_pretrained(model: nn.Module, directory: str | Path, record: TrainingRecord | None = None) -> Path:
    """Write the model folder atomically (built in a temp folder, then swapped into place by renames), with
    its model card (``medvid.models.card``: from ``record`` — data, recipe, evaluation — when a job gives one).

    An existing folder is replaced only if it is empty or a medvid checkpoint; anything else is
    refused untouched (it may hold someone's data).
    """
    kind = kind_of(model)
    directory = Path(directory)
    cfg = model.checkpoint_config()
    pretrained_cfg = model.pretrained_cfg.to_dict()
    with atomic_dir(directory, is_checkpoint, "a medvid model folder") as tmp:
        save_model(model, str(tmp / WEIGHTS))
        meta = {"format": "medvid", "format_version": FORMAT_VERSION, "kind": kind.name, "config": cfg,
                "pretrained_cfg": pretrained_cfg}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / CARD).write_text(render_card(kind.name, cfg, pretrained_cfg, record), encoding="utf-8")
        model.save_checkpoint_files(tmp)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a saved model folder (``format``, ``kind``, ``config``, ``pretrained_cfg``)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise MissingWeightsError(f"not a medvid model folder (no {CONFIG}): {directory}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MedvidError(f"{path}: not a medvid checkpoint config ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != "medvid":
        raise MedvidError(f"{path}: not a medvid checkpoint config")
    return meta


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the saved kind's architecture (no base weights read) and load ``model.safetensors`` strictly."""
    directory = Path(directory)
    meta = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise MissingWeightsError(f"weights missing: {weights}")
    kind = _KINDS.get(meta.get("kind", ""))
    if kind is None:
        raise MedvidError(f"{directory}: unknown model kind '{meta.get('kind')}'; known: {', '.join(model_kinds())}")
    check_config_against_weights(kind, meta["config"], directory)
    model = kind.build(dict(meta["config"]), directory)
    missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
    if missing or unexpected:
        raise MedvidError(f"{weights}: does not match its config: missing {sorted(missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}")
    model.config = dict(meta["config"])
    model.pretrained_cfg = PretrainedCfg.from_dict(meta.get("pretrained_cfg"))
    return model.to(map_location).eval()


def check_config_against_weights(kind: ModelKind, config: dict[str, Any], directory: Path) -> None:
    """Refuse a ``config.json`` whose sizes do not match the weights before anything is allocated: the architecture
    is built on the ``meta`` device (shapes only) and compared with the shapes in the safetensors header (read
    without loading a tensor). A tampered ``max_frames`` of 40,000,000 is a clear error naming the tensor, not a
    40 GB allocation."""
    weights = directory / WEIGHTS
    with torch.device("meta"):
        skeleton = kind.build(dict(config), directory)
    built = skeleton.state_dict(keep_vars=True)
    try:
        with safe_open(str(weights), framework="pt") as f:
            saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors reports a damaged header in several ways
        raise MedvidError(f"{weights}: not a readable safetensors file ({e})") from e
    for name, tensor in built.items():
        if name in saved and tuple(tensor.shape) != saved[name]:
            raise MedvidError(f"{directory / CONFIG} does not match {weights}: tensor '{name}' is {list(saved[name])} "
                              f"in the weights, the config builds {list(tensor.shape)}")
    unique = {id(t): t.numel() for t in built.values()}  # tied weights once, as the file stores them
    needed, held = sum(unique.values()), sum(math.prod(shape) for shape in saved.values())
    if needed > held:
        absent = sorted(set(built) - set(saved))[:5]
        raise MedvidError(f"{directory / CONFIG} does not match {weights}: the config builds {needed:,} values, the "
                          f"weights hold {held:,} (absent: {absent})")


VIDEO_TEXT_METHODS = ("encode_frames", "encode_video_from_features", "tokenize", "encode_text")


def load_video_text_model(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A saved model of any registered kind that embeds frames, clips and text (``VIDEO_TEXT_METHODS``:
    ``VideoTextModel``, the SurgVLP family), as zero-shot jobs need; other kinds are a clear error."""
    model = load_pretrained(directory, map_location)
    missing = [m for m in VIDEO_TEXT_METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise MedvidError(f"{directory}: a '{kind_of(model).name}' model does not embed video and text "
                          f"(no {', '.join(missing)}); use a video-text model")
    return model


def record_training_input(model: nn.Module, sampling: Sampling, channel_order: str = "RGB") -> PretrainedCfg:
    """Write into ``model.pretrained_cfg`` the sampling a training job actually used (frames per clip,
    frame rate or native stride, sector mask, motion image) and the channel order it fed, next to the
    crop/size/normalisation the job's preprocessing already took from it; returns the updated contract."""
    model.pretrained_cfg = model.pretrained_cfg.with_training_sampling(sampling, channel_order)
    return model.pretrained_cfg
