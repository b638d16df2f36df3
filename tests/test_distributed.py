"""Data parallelism on CPU (gloo) through ``torchrun --nproc-per-node 2``.

* every loss: the mean of the ranks' losses equals the single-process loss on the global batch,
  and the gradient reaching each rank's shard (÷ world size, as DDP averages) equals the
  single-process gradient of that shard;
* the trainer: two processes with the same global batch give the same losses as one.

This file doubles as the loss worker that ``torchrun`` launches.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tiny_training import SCRIPT, read_losses

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [str(Path(sys.executable).with_name("torchrun"))] if shutil.which(
    "torchrun", path=str(Path(sys.executable).parent)) else [sys.executable, "-m", "torch.distributed.run"]


def loss_cases(n: int = 8) -> dict[str, tuple]:
    """Global-batch inputs and a loss closure for each loss (same seed everywhere)."""
    from medvid.training.losses import info_nce, mil_nce, section_info_nce, siglip

    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(n, 6, generator=g), dim=-1)
    b = F.normalize(torch.randn(n, 6, generator=g), dim=-1)
    texts = F.normalize(torch.randn(n, 3, 6, generator=g), dim=-1)
    mask = torch.rand(n, 3, generator=g) > 0.4
    mask[:, 0] = True
    study = F.normalize(torch.randn(n, 3, 6, generator=g), dim=-1)
    return {
        "info_nce": ((a, b), lambda x, y: info_nce(x, y, 5.0)),
        "siglip": ((a, b), lambda x, y: siglip(x, y, 5.0, -2.0)),
        "mil_nce": ((a, texts, mask), lambda v, t, m: mil_nce(v, t, m, 5.0)),
        "section_info_nce": ((study, texts, mask), lambda s, t, m: section_info_nce(s, t, m, 5.0)),
    }


def single_process(case) -> tuple[float, list[torch.Tensor]]:
    inputs, fn = case
    leaves = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    loss = fn(*leaves)
    loss.backward()
    return loss.item(), [x.grad for x in leaves if x.requires_grad]


def worker(out: str) -> None:
    """Under torchrun: each rank takes its contiguous shard, computes the loss and its gradients."""
    from medvid.training.distributed import cleanup, init_distributed

    info = init_distributed("cpu")
    results = {}
    for name, (inputs, fn) in loss_cases().items():
        per = inputs[0].shape[0] // info.world_size
        shard = [x[info.rank * per:(info.rank + 1) * per].clone().requires_grad_(x.is_floating_point())
                 for x in inputs]
        loss = fn(*shard)
        loss.backward()
        results[name] = {"loss": loss.detach(), "grads": [x.grad for x in shard if x.requires_grad]}
    torch.save(results, Path(out) / f"rank{info.rank}.pt")
    cleanup()


def _run(cmd: list[str]) -> None:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_losses_under_torchrun_match_single_process(tmp_path):
    _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", __file__, str(tmp_path)])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, case in loss_cases().items():
        want_loss, want_grads = single_process(case)
        got_loss = sum(r[name]["loss"].item() for r in ranks) / 2
        assert got_loss == pytest.approx(want_loss, abs=1e-5), name
        for i, want in enumerate(want_grads):
            got = torch.cat([r[name]["grads"][i] for r in ranks]) / 2  # DDP averages over ranks
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4, msg=f"{name} grad {i}")


def test_trainer_two_processes_equal_one(tmp_path):
    """Same global batch (32) on 1 and 2 processes: identical losses over 12 optimizer steps."""
    script = str(SCRIPT)
    args = ["--steps", "12", "--batch", "32", "--accum", "2", "--ckpt-every", "100"]
    _run([sys.executable, script, str(tmp_path / "one"), *args])
    _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", script, str(tmp_path / "two"), *args])
    one, two = read_losses(tmp_path / "one"), read_losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 13))
    for step in one:
        assert float(two[step]) == pytest.approx(float(one[step]), rel=1e-5, abs=1e-6), step
    assert float(one[12]) < float(one[1])  # and it trained


def test_single_process_collectives_are_identity():
    from medvid.training.distributed import all_reduce_mean, gather_with_grad, init_distributed, shard_offset

    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x and all_reduce_mean(x) is x and shard_offset(3) == 0


if __name__ == "__main__":
    worker(sys.argv[1])
