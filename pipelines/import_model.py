"""``medvid import FAMILY SRC --out DIR``: read a published checkpoint the user brings and write it as a
medvid model folder (``save_pretrained``), usable by every job that takes ``--model``.

Families: ``echoprime`` (video encoder), ``echoprime-view``, ``echonet`` (EchoNet-Dynamic EF; needs
``mean``/``std``), ``panecho``, ``surgvlp`` / ``hecvl`` / ``peskavlp`` (``tokenizer_path`` for text).
The file is read with ``torch.load(weights_only=True)``; nothing is downloaded.

``echoprime-bank``: SRC is a downloaded EchoPrime folder; its candidate bank becomes the memory-mapped
bank folder OUT (:mod:`medvid.report.echoprime_bank`) that ``medvid draft --bank`` drafts from as EchoPrime
does. OUT is replaced only when it is such a bank (or empty).
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
    src: str = setting("", "the publisher's checkpoint file (echoprime-bank: the EchoPrime folder)")
    out: str = setting("", "medvid model folder to write (an existing one is replaced; echoprime-bank: the bank "
                           "folder)")
    tokenizer_path: Optional[str] = setting(None, "SurgVLP family, echoprime with text_encoder: local folder of the "
                                                  "matching tokenizer")
    text_encoder: Optional[str] = setting(None, "echoprime: EchoPrime's echo_prime_text_encoder.pt, imported with the "
                                                "video encoder (needs tokenizer_path)")
    mean: Optional[list[float]] = setting(None, "EchoNet-Dynamic: training-split mean per RGB channel (0-255)")
    std: Optional[list[float]] = setting(None, "EchoNet-Dynamic: training-split std per RGB channel (0-255)")
    scrub: bool = setting(True, "echoprime-bank: run medvid's scrubber over each distinct filled phrase")


_OPTIONS = {"surgvlp": ("tokenizer_path",), "hecvl": ("tokenizer_path",), "peskavlp": ("tokenizer_path",),
            "echonet": ("mean", "std"), "echoprime": ("text_encoder", "tokenizer_path")}


BANK_FAMILY = "echoprime-bank"


def run(cfg: Any) -> dict:
    if cfg.family not in IMPORTERS and cfg.family != BANK_FAMILY:
        raise MedvidError(f"family must be one of {sorted([*IMPORTERS, BANK_FAMILY])}, got {cfg.family!r}")
    for key in ("src", "out"):
        if not cfg[key]:
            raise MedvidError(f"{key} is required")
    if cfg.family == BANK_FAMILY:
        return _import_bank(cfg)
    values = OmegaConf.to_container(cfg, resolve=True)
    options = {k: values[k] for k in _OPTIONS.get(cfg.family, ()) if values[k] is not None}
    model = IMPORTERS[cfg.family](cfg.src, **options)
    out = model.save_pretrained(Path(cfg.out))
    return {"family": cfg.family, "kind": kind_of(model).name, "out": str(out),
            "parameters": sum(p.numel() for p in model.parameters()), "pretrained_cfg": model.pretrained_cfg.to_dict()}


def _import_bank(cfg: Any) -> dict:
    from medvid.report.echoprime_bank import import_echoprime_bank, is_echoprime_bank
    from medvid.runs import claim_out, record_run, run_settings

    if not Path(cfg.src).is_dir():
        raise MedvidError(f"src={cfg.src}: not a folder (give the downloaded EchoPrime folder)")
    settings = run_settings(cfg, ignore=("out", "tokenizer_path", "mean", "std"))
    job = f"import {BANK_FAMILY}"
    claim_out(cfg.out, job, settings, has_results=False, own=is_echoprime_bank, write=False)
    manifest = import_echoprime_bank(cfg.src, cfg.out, scrub=cfg.scrub)
    record_run(cfg.out, job, settings)
    return {"family": BANK_FAMILY, "out": str(cfg.out), "candidates": manifest["candidates"], "dim": manifest["dim"],
            "sections": len(manifest["sections"]), "phenotypes": len(manifest["phenotypes"]),
            "scrub": manifest["scrub"]}
