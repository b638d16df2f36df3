"""``medvid import FAMILY SRC --out DIR``: read a published checkpoint the user brings and write it as a
medvid model folder (``save_pretrained``), usable by every job that takes ``--model``.

Families: ``echoprime`` (video encoder), ``echoprime-view``, ``echonet`` (EchoNet-Dynamic EF; needs
``mean``/``std``), ``panecho``, ``surgvlp`` / ``hecvl`` / ``peskavlp`` (``tokenizer_path`` for text).
The file is read with ``torch.load(weights_only=True)``; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from medvid.config import setting
from medvid.errors import MedvidError
from medvid.models.checkpoint import kind_of
from medvid.models.importers import IMPORTERS


@dataclass
class Config:
    family: str = setting("", "one of medvid.models.importers.IMPORTERS")
    src: str = setting("", "the publisher's checkpoint file")
    out: str = setting("", "medvid model folder to write (an existing one is replaced)")
    tokenizer_path: Optional[str] = setting(None, "SurgVLP family, echoprime with text_encoder: local folder of the "
                                                  "matching tokenizer")
    text_encoder: Optional[str] = setting(None, "echoprime: EchoPrime's echo_prime_text_encoder.pt, imported with the "
                                                "video encoder (needs tokenizer_path)")
    mean: Optional[list[float]] = setting(None, "EchoNet-Dynamic: training-split mean per RGB channel (0-255)")
    std: Optional[list[float]] = setting(None, "EchoNet-Dynamic: training-split std per RGB channel (0-255)")


_OPTIONS = {"surgvlp": ("tokenizer_path",), "hecvl": ("tokenizer_path",), "peskavlp": ("tokenizer_path",),
            "echonet": ("mean", "std"), "echoprime": ("text_encoder", "tokenizer_path")}


def run(cfg: Any) -> dict:
    if cfg.family not in IMPORTERS:
        raise MedvidError(f"family must be one of {sorted(IMPORTERS)}, got {cfg.family!r}")
    for key in ("src", "out"):
        if not cfg[key]:
            raise MedvidError(f"{key} is required")
    values = OmegaConf.to_container(cfg, resolve=True)
    options = {k: values[k] for k in _OPTIONS.get(cfg.family, ()) if values[k] is not None}
    model = IMPORTERS[cfg.family](cfg.src, **options)
    out = model.save_pretrained(Path(cfg.out))
    return {"family": cfg.family, "kind": kind_of(model).name, "out": str(out),
            "parameters": sum(p.numel() for p in model.parameters()), "pretrained_cfg": model.pretrained_cfg.to_dict()}
