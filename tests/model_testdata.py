"""Shared model test data: random weights without the slow default init, and publishers' reference networks
that more than one test file builds. Not a test module: test files import it by name."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def fill_random(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every tensor (norm statistics included) without the slow default init; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
            else:
                t.zero_()
    return model.eval()


def random_weights(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` built on the meta device, then given ``fill_random`` weights on the CPU."""
    with torch.device("meta"):
        model = factory()
    return fill_random(model.to_empty(device="cpu"), seed)


def echoprime_reference() -> nn.Module:
    """EchoPrime's video encoder as its code builds it (echo_prime/model.py): mViT-v2-S, head -> 512."""
    from torchvision.models.video import mvit_v2_s

    model = mvit_v2_s(weights=None)
    model.head[-1] = nn.Linear(768, 512)
    return model
