"""Where and in which precision a job computes: one vocabulary for every job and the trainer.

``device``: ``auto`` (this process's GPU when there is one — ``LOCAL_RANK`` under torchrun — else the
CPU), ``cpu``, ``cuda`` or ``cuda:N``. ``precision``: ``auto``, ``fp32`` or ``bf16`` (``off`` is read as
``fp32``, the trainer's older word for it).
"""
from __future__ import annotations

import os

import torch

from medvid.errors import MedvidError

PRECISIONS = ("auto", "fp32", "bf16")
_ALIASES = {"off": "fp32"}


def check_device(device: str) -> None:
    """Refuse an unusable ``device`` before any heavy work (a clear error, not a late CUDA failure)."""
    if device in ("auto", "cpu"):
        return
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise MedvidError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise MedvidError(f"device={device} was asked for but no CUDA GPU is visible here; use device=cpu or auto")
    if ":" in device and int(device[5:]) >= torch.cuda.device_count():
        raise MedvidError(f"device={device}: only {torch.cuda.device_count()} GPU(s) visible")


def resolve_device(device: str) -> torch.device:
    """The ``torch.device`` a setting names, checked first (``auto`` resolved as the module doc says)."""
    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def check_precision(precision: str) -> str:
    """The canonical name of a precision setting (``off`` -> ``fp32``); anything else is refused."""
    name = _ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise MedvidError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return name


def has_native_bf16(device: torch.device) -> bool:
    """True on a GPU with bf16, or a CPU with native bf16 (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device, auto_on_cpu: bool = True) -> str:
    """``fp32`` or ``bf16`` for ``precision`` on ``device``. ``auto`` is bf16 where the hardware has it natively;
    ``auto_on_cpu=False`` keeps ``auto`` at fp32 on CPUs (training: bf16 gradients on a CPU are not worth it)."""
    name = check_precision(precision)
    if name != "auto":
        return name
    if device.type == "cpu" and not auto_on_cpu:
        return "fp32"
    return "bf16" if has_native_bf16(device) else "fp32"


def autocast_dtype(precision: str, device: torch.device, auto_on_cpu: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full precision)."""
    return torch.bfloat16 if resolve_precision(precision, device, auto_on_cpu) == "bf16" else None
