"""One study through an imported EchoPrime on the CPU: a replay of EchoPrime's own inference loop beside medvid's
path, in one process, on the same decoded loops.

* ``publisher`` (replayed from the facts of EchoPrime's ``process_dicoms`` + ``encode_study``, fp32): every
  frame of every loop cropped, zoomed and resized to 224² (the reference then keeps frames 0, 2, …, 30 only),
  normalised, zero-padded; the mViT over bins of 50 clips; the view classifier on all first frames at once.
  Its ``mask_outside_ultrasound`` (OpenCV, not installed here) is left out of both paths.
* ``medvid_fp32``: ``echoprime_clip`` (only the 32 frames the clip uses are preprocessed) + ``encode_clips`` and
  the view classifier over the study's clips in one batch, float32.
* ``medvid_cl``: the same with channels-last-3d input (mViT's Conv3d patch embedding).
* ``medvid_bf16``: the same under bf16 autocast (the CPU's AMX / AVX512-BF16), as ``StudyEncoder(precision="bf16")``.

Random weights (speed does not depend on them). Retrieval is the per-section nearest candidate over a random
bank of ``--bank`` unit vectors (EchoPrime's ``generate_report`` step). Per path: best seconds, speed-up over
``publisher``, max abs difference of the embeddings, cosine, and whether every section retrieves the same
candidate. Usage: ``python bench/echoprime_cpu.py [--loops 4] [--frames 48] [--threads 2] [--rounds 1]``.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def _study(n: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` loops of uint8 RGB frames (``frames`` × 480 × 640) with a moving bright sector."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:480, :640]
    fan = ((xx - 320) ** 2 + yy ** 2 < 440 ** 2) & (np.abs(xx - 320) < yy * 0.9)
    out = []
    for _ in range(n):
        base = rng.integers(0, 60, (480, 640), dtype=np.uint8) * fan
        loop = np.stack([np.roll(base, 3 * t, axis=1) for t in range(frames)])
        out.append(np.repeat(loop[..., None], 3, axis=3))
    return out


def publisher(encoder, viewer, loops):
    """EchoPrime's loop: preprocess every frame, bins of 50 clips through the mViT, views on first frames."""
    from medvid.models.importers import ECHOPRIME_PRETRAINED_CFG as c, ECHOPRIME_SPAN, _echoprime_frame

    mean, std = torch.tensor(c.mean).view(3, 1, 1, 1), torch.tensor(c.std).view(3, 1, 1, 1)
    stack = []
    for pixels in loops:
        x = torch.stack([_echoprime_frame(f, 224, 0.1) for f in pixels], 1)  # all frames, as process_dicoms
        x = (x - mean) / std
        if x.shape[1] < ECHOPRIME_SPAN:
            x = torch.cat([x, x.new_zeros(3, ECHOPRIME_SPAN - x.shape[1], 224, 224)], 1)
        stack.append(x[:, 0:ECHOPRIME_SPAN:c.frame_stride])
    stack = torch.stack(stack)
    with torch.no_grad():
        feats = torch.cat([encoder.model(stack[b * 50:(b + 1) * 50]) for b in range(math.ceil(len(stack) / 50))])
        views = viewer(stack[:, :, 0]).argmax(1)
    return feats, views


def medvid(encoder, viewer, loops, channels_last: bool = False, bf16: bool = False):
    from medvid.models.importers import echoprime_clip

    clips = torch.stack([echoprime_clip(f) for f in loops])
    if channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        feats = encoder.encode_clips(clips, normalize=False).float()
        views = viewer(clips).float().argmax(1)
    return feats, views


def nearest(feats: torch.Tensor, bank: torch.Tensor, sections: torch.Tensor) -> torch.Tensor:
    """Per section (random view weights, EchoPrime's weighted mean): the nearest bank row."""
    q = F.normalize(torch.einsum("sn,nd->sd", sections[:, :len(feats)], feats), dim=-1)
    return (q @ bank.T).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=4)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bank", type=int, default=100_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from medvid.models import importers as imp

    torch.manual_seed(0)
    encoder, viewer = imp.EchoPrimeVideoEncoder().eval(), imp.EchoPrimeViewClassifier().eval()
    loops = _study(args.loops, args.frames)
    bank = F.normalize(torch.randn(args.bank, 512), dim=-1)
    sections = torch.rand(15, args.loops)
    paths = {"publisher": lambda: publisher(encoder, viewer, loops),
             "medvid_fp32": lambda: medvid(encoder, viewer, loops),
             "medvid_cl": lambda: medvid(encoder, viewer, loops, channels_last=True),
             "medvid_bf16": lambda: medvid(encoder, viewer, loops, bf16=True)}
    medvid(encoder, viewer, loops[:1])  # warm-up (oneDNN kernels)
    best, outs = {k: float("inf") for k in paths}, {}
    for _ in range(args.rounds):  # interleaved: the machine is shared, ratios within a round count
        for name, fn in paths.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ref_feats, ref_views = outs["publisher"]
    ref_nn = nearest(ref_feats, bank, sections)
    rows = {}
    for name, (feats, views) in outs.items():
        rows[name] = {"seconds": round(best[name], 2), "speedup": round(best["publisher"] / best[name], 2),
                      "max_abs_diff": float((feats - ref_feats).abs().max()),
                      "min_cosine": float(F.cosine_similarity(feats, ref_feats).min()),
                      "same_views": bool(torch.equal(views, ref_views)),
                      "same_sections": bool(torch.equal(nearest(feats, bank, sections), ref_nn))}
    cpu = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    print(json.dumps({"loops": args.loops, "frames": args.frames, "threads": args.threads,
                      "amx_bf16": "amx_bf16" in cpu, "avx512_bf16": "avx512_bf16" in cpu,
                      "bf16_supported": torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                      "paths": rows}, indent=1))


if __name__ == "__main__":
    main()
