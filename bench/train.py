"""Training throughput and peak memory: frozen backbone on cached features vs end-to-end, one process.

Runs the real Trainer on the clip–speech MIL-NCE objective (``LectureContrastive``) with the
default model (EfficientNet-Lite0 frames + all-MiniLM-L6-v2 text, locked text tower):

* ``frozen-cached``: frame features as the feature cache serves them ``[B, T, 1280]``; trains the
  temporal module, projections and temperature (what ``frozen_backbone: true`` runs);
* ``end-to-end`` (baseline): raw clips ``[B, 3, T, 224, 224]`` through a trainable backbone.

On a GPU each mode runs in fp32 and bf16 autocast. Prints a JSON summary with samples/s, the
ratio to the end-to-end fp32 baseline and peak memory (CUDA: max allocated; CPU: process peak RSS,
which only grows, so modes run smallest first).

    .venv/bin/python bench/train.py --steps 12 --batch 8 --frames 4
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvid.models.factory import create_model  # noqa: E402
from medvid.training.objectives import LectureContrastive  # noqa: E402
from medvid.training.trainer import Trainer, TrainConfig  # noqa: E402


class Synthetic(Dataset):
    """Random inputs of the right shapes (throughput does not depend on the values)."""

    def __init__(self, n: int, frames: int, cached: bool, feat_dim: int, text_dim: int, size: int):
        self.n, self.frames, self.cached = n, frames, cached
        self.feat_dim, self.text_dim, self.size = feat_dim, text_dim, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        item = {"frame_mask": torch.ones(self.frames, dtype=torch.bool),
                "text_feats": torch.randn(3, self.text_dim, generator=g),
                "text_mask": torch.tensor([True, True, False])}
        if self.cached:
            item["feats"] = torch.randn(self.frames, self.feat_dim, generator=g)
        else:
            item["clips"] = torch.randn(3, self.frames, self.size, self.size, generator=g)
        return item


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(mode: str, amp: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = create_model(args.model, pretrained=True)
    model.freeze_text()
    cached = mode == "frozen-cached"
    if cached:
        model.freeze_backbone()
    data = Synthetic(args.batch * (args.steps + 1), args.frames, cached, model.video.feature_dim,
                     model.text.out_dim, model.pretrained_cfg["input_size"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=1e-4, warmup_steps=1, amp=amp,
                      checkpoint_every=10**9, eval_every=0, progress=False, device=device.type, deterministic=False)
    with tempfile.TemporaryDirectory() as out:
        Trainer(LectureContrastive(model), data, cfg, out).fit(resume=False)
        with open(Path(out) / "train_log.csv") as f:
            rates = [float(r["samples_per_s"]) for r in csv.DictReader(f)][args.warmup:]
    return {"mode": mode, "amp": amp, "samples_per_s": sum(rates) / len(rates), "peak_mb": peak_mb(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="medvid-effnetlite0-minilm")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the average")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    amps = ["off", "bf16"] if device.type == "cuda" else ["off"]
    results = [run_mode(mode, amp, args, device) for mode in ("frozen-cached", "end-to-end") for amp in amps]
    base = next(r for r in results if r["mode"] == "end-to-end" and r["amp"] == "off")["samples_per_s"]
    for r in results:
        r["speedup_vs_end_to_end_fp32"] = r["samples_per_s"] / base
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "model": args.model, "batch": args.batch, "frames": args.frames, "steps": args.steps,
            "results": results}
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
