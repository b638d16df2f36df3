"""Process-group setup from the ``torchrun`` environment and a gradient-carrying all-gather.

One command works everywhere: without ``torchrun`` (no ``WORLD_SIZE`` in the environment) this is a
single process and every collective is the identity. Backend: NCCL when the process owns a GPU,
gloo otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medvid.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by ``torchrun``'s env vars (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    ``device`` as :func:`medvid.device.resolve_device` reads it (``auto`` and ``cuda``: this process's local GPU).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's shard.

    Each rank computes its loss on its own rows against everyone's features; the gradient of the
    total loss with respect to the local features is therefore the sum over ranks of the
    gradients arriving at this shard (an all-reduce then slice; gloo has no reduce-scatter).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        ctx.n = x.shape[0]
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(ctx.world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        ctx.sizes = [int(s.item()) for s in sizes]
        if len(set(ctx.sizes)) != 1:
            raise RuntimeError(f"all ranks must hold the same batch size to gather features, got {ctx.sizes}")
        out = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.n
        return grad[start:start + ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order); gradients flow back to the local shard."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def shard_offset(local_batch: int) -> int:
    """Index of this rank's first row in a :func:`gather_with_grad` result."""
    return rank() * local_batch


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average a (detached) tensor over ranks, for logging."""
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()
