"""medvid's checkpoint format (safetensors + config JSON + model card stub).

A saved folder holds ``model.safetensors`` (all weights), ``config.json`` (kind, model config,
pretrained_cfg) and ``README.md``; a ``VideoTextModel`` also gets ``text/`` (the Hugging Face
config and tokenizer), so loading needs nothing outside the folder and never unpickles code.
Importers for published checkpoints are in ``medvid.models.importers`` (re-exported here).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models.importers import (  # noqa: F401  (public re-exports)
    IMPORTERS, CheckpointMismatchError, import_echonet_dynamic, import_echoprime_video_encoder,
    import_echoprime_view_classifier, import_panecho, import_surgvlp,
)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TEXT_DIR = "text"


def _kind(model: nn.Module) -> str:
    from medvid.models.clip import VideoTextModel
    from medvid.models.view import ViewClassifier

    if isinstance(model, VideoTextModel):
        return "video_text"
    if isinstance(model, ViewClassifier):
        return "view_classifier"
    raise TypeError(f"save_pretrained supports VideoTextModel and ViewClassifier, got {type(model).__name__}")


def _portable_config(model: nn.Module, kind: str) -> dict[str, Any]:
    """The model config as saved: weights come from the folder, so no base-weight paths are kept."""
    cfg = dict(model.config)
    cfg["pretrained"] = False
    cfg["backbone_checkpoint"] = None
    if kind == "video_text":
        cfg["text_model_path"] = TEXT_DIR
    if kind == "view_classifier":
        cfg["labels"] = list(model.labels)
    return cfg


def _card_stub(kind: str, cfg: dict[str, Any], pretrained_cfg: dict[str, Any]) -> str:
    return (
        f"# {cfg.get('name', kind)}\n\n"
        f"medvid `{kind}` checkpoint (load with `medvid.models.hub.load_pretrained(dir)`).\n\n"
        f"- backbone: `{cfg.get('backbone')}`; temporal: `{cfg.get('temporal')}`\n"
        f"- input: {pretrained_cfg.get('num_frames')} frames of {pretrained_cfg.get('input_size')}², RGB, "
        f"mean {pretrained_cfg.get('mean')} / std {pretrained_cfg.get('std')} on the 0-255 scale\n\n"
        "## Intended use, data, metrics, limits\n\n"
        "_Fill in: training data, evaluation on held-out data, known limits. See model_cards/ for the family card._\n"
    )


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write the model folder atomically (built in a temp folder, then moved into place)."""
    kind = _kind(model)
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / CONFIG).is_file():
        raise MedvidError(f"refusing to overwrite {directory}: it exists and is not a medvid model folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    cfg = _portable_config(model, kind)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_model(model, str(tmp / WEIGHTS))
        meta = {"format": "medvid", "format_version": FORMAT_VERSION, "kind": kind, "config": cfg,
                "pretrained_cfg": model.pretrained_cfg}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(_card_stub(kind, cfg, model.pretrained_cfg), encoding="utf-8")
        if kind == "video_text":
            model.text.tokenizer.save_pretrained(str(tmp / TEXT_DIR))
            model.text.model.config.save_pretrained(str(tmp / TEXT_DIR))
        if directory.exists():  # swap by renames: a reader never sees a half-written folder
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a saved model folder."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise MissingWeightsError(f"not a medvid model folder (no {CONFIG}): {directory}")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != "medvid":
        raise MedvidError(f"{path}: not a medvid checkpoint config")
    return meta


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the architecture from ``config.json`` (no base weights read) and load ``model.safetensors`` strictly."""
    from medvid.models.factory import create_model, create_view_classifier

    directory = Path(directory)
    meta = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise MissingWeightsError(f"weights missing: {weights}")
    cfg = dict(meta["config"], pretrained=False)
    if meta["kind"] == "video_text":
        cfg["text_model_path"] = str(directory / TEXT_DIR)
        model = create_model(cfg)
    elif meta["kind"] == "view_classifier":
        model = create_view_classifier(cfg)
    else:
        raise MedvidError(f"{directory}: unknown model kind '{meta['kind']}'")
    missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
    if missing or unexpected:
        raise MedvidError(f"{weights}: does not match its config: missing {sorted(missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}")
    model.config = dict(meta["config"])
    model.pretrained_cfg = dict(meta["pretrained_cfg"])
    return model.to(map_location).eval()
