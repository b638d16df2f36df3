"""Inference speed and peak memory of the video encoder's temporal modules.

    .venv/bin/python bench/models.py                      # CPU, 16 x 224², fp32
    .venv/bin/python bench/models.py --device cuda        # GPU: fp32 and bf16 autocast in the same run

Every temporal module (mean, attention, transformer, xclip) runs on the same EfficientNet-Lite0
backbone, interleaved in the same process, and is reported as a ratio to ``mean`` (the baseline).
Runs are round-robin over the modules (median of ``--repeats``) so load drift hits all alike.
The frozen-backbone path (temporal module alone on cached frame features) is timed too. Peak memory is the growth of resident memory during a
module's runs (sampled every ms, after the model and input exist; the first module's figure also
includes one-off allocator growth); on CUDA, ``torch.cuda.max_memory_allocated`` above the weights.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import threading
import time

import torch

from medvid.models.factory import create_video_encoder
from medvid.models.video import TEMPORAL_MODULES


def _encoder(temporal: str, device: str):
    torch.manual_seed(0)
    return create_video_encoder({"temporal": temporal}, pretrained=False).to(device).eval()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _once(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _PeakRSS:
    """Samples this process's resident memory every millisecond; ``peak`` = max growth over the start."""

    def __enter__(self) -> "_PeakRSS":
        self.start = _rss_mb()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb() - self.start)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb() - self.start)


def run(device: str, batch: int, frames: int, size: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, frames, size, size, device=device)
    precisions = ["fp32", "bf16"] if device == "cuda" else ["fp32"]
    encoders = {t: _encoder(t, device) for t in TEMPORAL_MODULES}
    rows = []
    with torch.inference_mode():
        feats, mask = encoders["mean"].frame_features(x)
        for prec in precisions:
            ctx = torch.autocast(device, dtype=torch.bfloat16, enabled=prec == "bf16")
            e2e = {t: [] for t in encoders}
            cached = {t: [] for t in encoders}
            peak = {}
            with ctx:
                for t, enc in encoders.items():  # warm-up run per module, measuring its memory peak
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                        base_mem = torch.cuda.memory_allocated()
                    with _PeakRSS() as rss:
                        enc(x)
                    peak[t] = ((torch.cuda.max_memory_allocated() - base_mem) / 2**20 if device == "cuda"
                               else rss.peak)
                    enc.forward_features(feats, mask)
                for _ in range(repeats):  # round robin: every module sees the same load drift
                    for t, enc in encoders.items():
                        e2e[t].append(_once(lambda: enc(x), device))
                        cached[t].append(_once(lambda: enc.forward_features(feats, mask), device))
            for t, enc in encoders.items():
                rows.append({"temporal": t, "precision": prec,
                             "clips_per_s": batch / statistics.median(e2e[t]),
                             "temporal_ms_per_clip": 1000 * statistics.median(cached[t]) / batch,
                             "temporal_params_m": sum(p.numel() for p in enc.temporal.parameters()) / 1e6,
                             "peak_mem_mb": peak[t]})
    base = next(r for r in rows if r["temporal"] == "mean" and r["precision"] == "fp32")
    for row in rows:
        row["speed_vs_mean_fp32"] = row["clips_per_s"] / base["clips_per_s"]
    return {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({threads} threads)",
            "batch": batch, "frames": frames, "size": size, "repeats": repeats, "torch": torch.__version__,
            "backbone": "tf_efficientnet_lite0", "rows": rows}


def markdown(result: dict) -> str:
    mem = "peak RSS growth MB" if result["device"].startswith("cpu") else "peak GPU MB over weights"
    lines = [f"{result['device']}, batch {result['batch']} x {result['frames']} x {result['size']}², "
             f"median of {result['repeats']}, torch {result['torch']}", "",
             f"| temporal | precision | temporal params (M) | clips/s | vs mean fp32 "
             f"| temporal module on cached features, ms/clip | {mem} |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        m = f"{r['peak_mem_mb']:.0f}"
        lines.append(f"| {r['temporal']} | {r['precision']} | {r['temporal_params_m']:.2f} | {r['clips_per_s']:.2f} "
                     f"| {r['speed_vs_mean_fp32']:.2f}x | {r['temporal_ms_per_clip']:.2f} | {m} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device available")
    result = run(args.device, args.batch, args.frames, args.size, args.repeats, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()
