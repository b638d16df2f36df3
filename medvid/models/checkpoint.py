"""``save_pretrained`` / ``from_pretrained`` for medvid models, through the one checkpoint format in ``hub``."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T", bound="Pretrained")


class Pretrained:
    """Mixin: a model saved as safetensors + config JSON + model card, reloaded without pickles."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` + ``README.md`` (see ``medvid.models.hub``)."""
        from medvid.models.hub import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, map_location: str | torch.device = "cpu") -> T:
        """Load a folder written by ``save_pretrained``; it must hold an instance of ``cls``."""
        from medvid.models.hub import load_pretrained

        model = load_pretrained(directory, map_location)
        if not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
