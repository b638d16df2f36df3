"""Training benchmarks, one process per measurement (JSON summary on stdout).

``throughput`` (default): frozen backbone on cached features vs end-to-end, the real Trainer on the
clip–speech MIL-NCE objective (``LectureContrastive``) with the default model (EfficientNet-Lite0
frames + all-MiniLM-L6-v2 text, locked text tower):

* ``frozen-cached``: frame features as the feature cache serves them ``[B, T, 1280]``; trains the
  temporal module, projections and temperature (what ``frozen_backbone: true`` runs);
* ``end-to-end`` (baseline): raw clips ``[B, 3, T, 224, 224]`` through a trainable backbone.

On a GPU each mode runs in fp32 and bf16 autocast. Peak memory: CUDA max allocated; CPU: process
peak RSS, which only grows, so modes run smallest first.

    .venv/bin/python bench/train.py throughput --steps 12 --batch 8 --frames 4
    .venv/bin/python bench/train.py throughput --frozen-only --threads 0 1 --batch 32 --steps 40

``cache``: building the lecture frame-feature cache, in one process: the old path (each clip read by
random access, ``dataset[i]``, a DataLoader batch at a time, plain backbone) against ``cache_clips``
now (decoding video by video with ``LecturePairDataset.iter_clips``, channels-last backbone), on the
same pairs, alternating; reports clips/s, the ratio, decode-only and backbone-only costs per clip
and the largest feature difference.

    .venv/bin/python bench/train.py cache --pairs IDX/pairs.jsonl --root LECTURES --clips 96

``scale``: peak RSS and wall time of the whole ``medvid pretrain`` surgical job (cache build,
training, evaluation) on the first 8, 24, ... lectures of one synthetic corpus, each in a fresh
process (``os.wait4`` gives that process's own peak RSS), indexed once.

    .venv/bin/python bench/train.py scale --lectures LECTURES --sizes 8 24 48 --work /tmp/scale
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
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


def run_mode(mode: str, amp: str, args: argparse.Namespace, device: torch.device, threads: int = 0) -> dict:
    torch.manual_seed(0)
    model = create_model(args.model, pretrained=True)
    model.freeze_text()
    cached = mode == "frozen-cached"
    if cached:
        model.freeze_backbone()
    data = Synthetic(args.batch * (args.steps + 1), args.frames, cached, model.video.feature_dim,
                     model.text.out_dim, model.pretrained_cfg.input_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=1e-4, warmup_steps=1, amp=amp,
                      checkpoint_every=10**9, eval_every=0, progress=False, device=device.type, deterministic=False,
                      num_threads=threads)
    with tempfile.TemporaryDirectory() as out:
        Trainer(LectureContrastive(model), data, cfg, out).fit(resume=False)
        with open(Path(out) / "train_log.csv") as f:
            rates = [float(r["samples_per_s"]) for r in csv.DictReader(f)][args.warmup:]
    return {"mode": mode, "amp": amp, "threads": threads or torch.get_num_threads(),
            "samples_per_s": sum(rates) / len(rates), "peak_mb": peak_mb(device)}


def throughput(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    amps = ["off", "bf16"] if device.type == "cuda" else ["off"]
    results = [run_mode("frozen-cached", amp, args, device, threads) for amp in amps for threads in args.threads]
    if not args.frozen_only:
        results += [run_mode("end-to-end", amp, args, device) for amp in amps]
    base = next(r for r in results if r["mode"] == ("frozen-cached" if args.frozen_only else "end-to-end")
                and r["amp"] == "off")["samples_per_s"]
    for r in results:
        r["speedup_vs_" + ("first" if args.frozen_only else "end_to_end_fp32")] = r["samples_per_s"] / base
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "model": args.model, "batch": args.batch, "frames": args.frames, "steps": args.steps,
            "results": results}


def cache_speed(args: argparse.Namespace) -> dict:
    """The old per-item lecture feature cache build vs ``cache_clips`` now, same process."""
    import numpy as np
    from omegaconf import OmegaConf

    from medvid.datasets.lectures import LecturePairDataset
    from medvid.models.factory import model_config
    from medvid.training.feature_cache import build_feature_cache, cache_clips, dataset_clips, ordered_clips

    overrides = {"input_size": args.input_size} if args.input_size else {}
    model = create_model(OmegaConf.merge(model_config(args.model, True), overrides))
    backbone = model.video.backbone.eval()
    ds = LecturePairDataset(args.pairs, args.root, num_frames=args.frames, fps=2.0,
                            preprocess=model.preprocess(), random_start=False)
    ds.pairs = ds.pairs[: args.clips]  # a prefix: clips as dense in their lectures as in a whole corpus
    keys = [p["pair_id"] for p in ds.pairs]
    kw = dict(n_frames=args.frames, batch_size=args.batch, progress=False)
    streams = {"per-item": lambda: dataset_clips(ds, lambda item: (item["video"], None), batch_size=args.batch),
               "video-by-video": lambda: ordered_clips(ds)}
    builds = {  # the old default (per item, plain layout) and what cache_clips does now
        "per-item": lambda out: build_feature_cache(backbone, keys, streams["per-item"](), out, {}, **kw,
                                                    feature_dim=model.video.feature_dim),
        "video-by-video": lambda out: cache_clips(backbone, model.video.feature_dim, ds, keys, out, {}, **kw)}
    rows = list(range(len(keys)))
    timing: dict[str, list[float]] = {name: [] for name in builds}
    decode: dict[str, list[float]] = {name: [] for name in builds}
    feats = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in (builds if rep % 2 == 0 else reversed(list(builds))):
                t0 = time.perf_counter()
                for _ in streams[name]()(rows):
                    pass
                decode[name].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                cache = builds[name](Path(tmp) / f"{name}{rep}")
                timing[name].append(time.perf_counter() - t0)
                feats[name] = np.asarray(cache.features, dtype=np.float32)
        frames = torch.randn(args.batch * args.frames, 3, model.pretrained_cfg.input_size,
                             model.pretrained_cfg.input_size)
        with torch.inference_mode():
            backbone(frames)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                backbone(frames)
            encode_per_clip = (time.perf_counter() - t0) / args.repeats / args.batch
    n = len(keys)
    best = {name: min(t) for name, t in timing.items()}
    return {"clips": n, "videos": len({p["video"] for p in ds.pairs}), "batch": args.batch, "frames": args.frames,
            "input_size": model.pretrained_cfg.input_size, "torch_threads": torch.get_num_threads(),
            "clips_per_s": {k: n / v for k, v in best.items()},
            "speedup_video_by_video": best["per-item"] / best["video-by-video"],
            "decode_s_per_clip": {k: min(v) / n for k, v in decode.items()},
            "backbone_s_per_clip": encode_per_clip,
            "max_abs_feature_diff": float(np.abs(feats["per-item"] - feats["video-by-video"]).max()),
            "all_runs_s": timing}


def _job_rss(cmd: list[str], log_path: Path) -> tuple[int, float, float]:
    """Run ``cmd``; its exit code, wall seconds and own peak RSS in MB (``os.wait4``)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024


def scale(args: argparse.Namespace) -> dict:
    """Peak RSS of ``medvid pretrain`` (surgical) on growing prefixes of one lecture corpus."""
    from medvid.utils import read_jsonl, write_jsonl

    medvid = [sys.executable, "-m", "medvid.cli"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index"
    if not (index / "pairs.jsonl").is_file():  # frame types are not used by pretraining: not computed
        rc, _, _ = _job_rss([*medvid, "lectures", "index", str(args.lectures), "--out", str(index),
                             "frame_type_samples=0"], work / "index.log")
        if rc:
            raise SystemExit(f"lectures index failed, see {work / 'index.log'}")
    rows = read_jsonl(index / "pairs.jsonl")
    videos = sorted({r["video"] for r in rows})
    results = []
    for n in args.sizes:
        if n > len(videos):
            raise SystemExit(f"{args.lectures} has {len(videos)} lectures, fewer than {n}")
        keep = set(videos[:n])
        pairs = work / f"pairs_{n}.jsonl"
        write_jsonl(pairs, [r for r in rows if r["video"] in keep])
        out = work / f"run_{n}"
        cmd = [*medvid, "pretrain", "configs/surgical_pretrain.yaml", f"out={out}", f"lectures.pairs={pairs}",
               f"lectures.root={args.lectures}", f"train.max_steps={args.steps}", "train.progress=false",
               "resume=false", *args.overrides]
        rc, wall, peak = _job_rss(cmd, work / f"run_{n}.log")
        if rc:
            raise SystemExit(f"pretrain on {n} lectures failed, see {work / f'run_{n}.log'}")
        metrics = json.loads((out / "metrics.json").read_text())
        cache = out / "cache" / "lectures" / "features.npy"
        results.append({"lectures": n, "pairs": sum(1 for r in rows if r["video"] in keep), "peak_rss_mb": round(peak),
                        "wall_s": round(wall, 1), "items": metrics["items"], "cache_mb": cache.stat().st_size / 2**20,
                        "test_video_to_text_recall@5": metrics["test"].get("video_to_text_recall@5")})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # each size as soon as it is measured
    peaks = [r["peak_rss_mb"] for r in results]
    return {"steps": args.steps, "overrides": args.overrides, "results": results,
            "peak_ratio_largest_to_smallest": peaks[-1] / peaks[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    tp = sub.add_parser("throughput", help="frozen-cached vs end-to-end training steps")
    cp = sub.add_parser("cache", help="lecture feature cache: per-item vs video-by-video decoding")
    sp = sub.add_parser("scale", help="peak RSS of medvid pretrain over corpus sizes")
    for p in (tp, cp):
        p.add_argument("--model", default="medvid-effnetlite0-minilm")
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--frames", type=int, default=4)
    tp.add_argument("--steps", type=int, default=12)
    tp.add_argument("--warmup", type=int, default=2, help="first steps left out of the average")
    tp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tp.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="torch CPU threads for the frozen-cached runs (0 = torch's default)")
    tp.add_argument("--frozen-only", action="store_true", help="skip the end-to-end baseline")
    cp.add_argument("--pairs", required=True, help="pairs.jsonl from `medvid lectures index`")
    cp.add_argument("--root", required=True, help="the lecture videos")
    cp.add_argument("--clips", type=int, default=96, help="the first N pairs")
    cp.add_argument("--repeats", type=int, default=2)
    cp.add_argument("--input-size", type=int, default=0, help="backbone input side (0 = the model's)")
    sp.add_argument("--lectures", required=True, help="a `medvid synth lectures` folder")
    sp.add_argument("--sizes", type=int, nargs="+", default=[8, 24, 96])
    sp.add_argument("--work", required=True)
    sp.add_argument("--steps", type=int, default=60)
    sp.add_argument("overrides", nargs="*", help="extra key=value settings for medvid pretrain")
    args = ap.parse_args(sys.argv[1:] if len(sys.argv) > 1 and sys.argv[1] in sub.choices else
                         ["throughput", *sys.argv[1:]])
    print(json.dumps({"throughput": throughput, "cache": cache_speed, "scale": scale}[args.cmd](args), indent=1))


if __name__ == "__main__":
    main()
