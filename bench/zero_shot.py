"""Throughput of 1 fps zero-shot phase recognition over a long video on CPU, in one process:

* ``backbone``: the frame backbone alone on pre-decoded, pre-processed tensors (the ceiling);
* ``job``: the full ``medvid zero-shot phase`` job (decode at 1 fps, preprocess, backbone,
  temporal + projection, prompts embedded once, CSV, metrics, ribbon plot);
* ``reference``: a frame-at-a-time loop that seeks each frame and re-encodes the prompts for
  every frame (how zero-shot is often scripted), on the first ``--ref-frames`` seconds.

Usage: ``python bench/zero_shot.py --minutes 60 --work /tmp/zs_bench`` (the test video is
generated once with libx264 at 25 fps and reused). Prints a JSON summary with the ratios.
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from medvid.config import config_dir, load_config
from medvid.io.video import Video
from medvid.models.clip import VideoTextModel
from medvid.models.factory import create_model
from medvid.transforms.clip import to_clip_tensor
from medvid.transforms.sampling import regular_times
from medvid.vocab import CHOLEC80_PHASES
from medvid.zeroshot.prompts import load_prompt_set, model_text_encoder
from pipelines import zero_shot


def make_video(path: Path, minutes: float, fps: int = 25, size: tuple[int, int] = (480, 854), seed: int = 0) -> None:
    """A Cholec80-like stream (25 fps, 854×480, H.264, keyframe every 250 frames) of moving textures."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(0, 255, (h + 64, w + 64, 3), dtype=np.uint8)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "250", "crf": "28"}
        s.time_base = Fraction(1, fps)
        for i in range(int(minutes * 60 * fps)):
            dy, dx = (i // 3) % 64, (i // 5) % 64
            frame = base[dy:dy + h, dx:dx + w].copy()
            frame[..., (i // (fps * 60)) % 3] //= 2  # content changes every minute
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    tmp.rename(path)


@torch.inference_mode()
def backbone_fps(model, frames: np.ndarray, batch_size: int, repeats: int) -> float:
    """Backbone throughput on tensors already decoded and preprocessed (frames/s)."""
    x = model.preprocess()(to_clip_tensor(frames[:batch_size])).permute(1, 0, 2, 3).contiguous()
    model.encode_frames(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.encode_frames(x)
    return repeats * len(x) / (time.perf_counter() - t0)


@torch.inference_mode()
def reference_fps(model, video: Video, texts: list[str], n_classes: int, seconds: int) -> float:
    """Frame-at-a-time: seek + decode one frame, preprocess, encode it, re-encode every prompt."""
    encode = model_text_encoder(model)
    pre = model.preprocess()
    per_class = len(texts) // n_classes
    t0 = time.perf_counter()
    for t in range(seconds):
        frame = video.frames_at([float(t)])
        x = pre(to_clip_tensor(frame)).permute(1, 0, 2, 3)
        emb = model.encode_video_from_features(model.encode_frames(x)[:, None])
        text = encode(texts).view(n_classes, per_class, -1).mean(1)
        text = torch.nn.functional.normalize(text, dim=-1)
        (100 * emb @ text.T).softmax(-1).argmax(-1)
    return seconds / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_zs_bench"))
    ap.add_argument("--model", default="medvid-effnetlite0-minilm", help="registry name (packaged weights)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ref-frames", type=int, default=60, help="seconds of video for the reference loop")
    ap.add_argument("--backbone-repeats", type=int, default=8)
    args = ap.parse_args()

    root = args.work / f"root_{args.minutes:g}min"
    video_path = root / "videos" / "long01.mp4"
    t0 = time.perf_counter()
    make_video(video_path, args.minutes)
    gen_s = time.perf_counter() - t0
    model_dir = args.work / "model"
    if not (model_dir / "config.json").exists():
        create_model(args.model).save_pretrained(model_dir)
    model = VideoTextModel.from_pretrained(model_dir).eval()

    with Video(video_path) as v:
        duration, n_native = v.duration, v.num_frames
        sample = v.frames_at(np.arange(args.batch_size, dtype=float))
        n_samples = len(regular_times(duration, 1.0))
        t0 = time.perf_counter()  # decode alone, on the first 2 minutes (cost is linear in duration)
        n_dec = sum(len(t) for t, _ in v.iter_batches(fps=1.0, batch_size=args.batch_size, end_s=120.0))
        decode_fps = n_dec / (time.perf_counter() - t0)
    bb = backbone_fps(model, sample, args.batch_size, args.backbone_repeats)

    out = args.work / f"out_{args.minutes:g}min"
    cfg = load_config(zero_shot.Config, "zero_shot", overrides=[
        f"data_root={root}", f"model={model_dir}", f"out={out}", f"batch_size={args.batch_size}", "overwrite=true"])
    t0 = time.perf_counter()
    summary = zero_shot.run(cfg)
    job_s = time.perf_counter() - t0
    job = n_samples / job_s

    prompts = load_prompt_set(config_dir() / "prompts" / "cholec80_phases.yaml", CHOLEC80_PHASES)
    with Video(video_path) as v:
        ref = reference_fps(model, v, prompts.all_prompts(), len(prompts.classes), min(args.ref_frames, n_samples))

    result = {
        "video": {"minutes": round(duration / 60, 2), "native_frames": n_native, "size": "854x480", "fps": 25,
                  "samples_1fps": n_samples, "generated_s": round(gen_s, 1)},
        "model": args.model, "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "frames_per_s": {"backbone_only": round(bb, 2), "job": round(job, 2), "reference_loop": round(ref, 2),
                         "decode_only_1fps": round(decode_fps, 1)},
        "job_seconds": round(job_s, 1), "job_summary_seconds": summary["seconds"],
        "ratio_job_vs_backbone": round(job / bb, 3), "speedup_job_vs_reference": round(job / ref, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
