"""The two model choices that make `medvid demo` fit a laptop, measured against the shipped defaults in one
process: EfficientNet-Lite0 frame features at 112 px vs 224 px (the frame-feature caches), and one echo
training step of the temporal transformer 256 wide on 8-frame clips vs 512 wide on 16-frame clips
(8 studies x 5 loops, as in the demo). CPU seconds per item, best of ``--repeat``.

Usage: ``python bench/demo.py [--threads 1]``. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from medvid.models.backbones import create_backbone
from medvid.models.video import TemporalTransformer


def _cpu(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def backbone_cost(size: int, repeat: int, batch: int = 32) -> float:
    """CPU seconds per frame of the frozen backbone at ``size`` px."""
    net = create_backbone("tf_efficientnet_lite0", True, None).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        return _cpu(lambda: net(x), repeat) / batch


def temporal_step_cost(width: int, heads: int, frames: int, repeat: int, loops: int = 40) -> float:
    """CPU seconds of one forward + backward + AdamW step of the temporal transformer on cached features."""
    net = TemporalTransformer(1280, width, 2, heads)
    opt = torch.optim.AdamW(net.parameters())
    feats, mask = torch.randn(loops, frames, 1280), torch.ones(loops, frames, dtype=torch.bool)

    def step() -> None:
        opt.zero_grad()
        net(feats, mask).square().mean().backward()
        opt.step()
    return _cpu(step, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b224, b112 = backbone_cost(224, args.repeat), backbone_cost(112, args.repeat)
    t512, t256 = temporal_step_cost(512, 8, 16, args.repeat), temporal_step_cost(256, 4, 8, args.repeat)
    print(json.dumps({"threads": args.threads, "backbone_cpu_s_per_frame": {"224": b224, "112": b112,
                                                                          "ratio": b224 / b112},
                      "temporal_step_cpu_s": {"512_wide_16_frames": t512, "256_wide_8_frames": t256,
                                              "ratio": t512 / t256}}, indent=1))


if __name__ == "__main__":
    main()
