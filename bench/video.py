"""Video decoding benchmark: 1 fps sampling over long 25 fps 480p videos, medvid vs decode-everything.

    python bench/video.py --minutes 5 60            # generates (and caches) the videos first

For each length, each method runs in its own subprocess (so peak RSS is its own):
- ``medvid``: ``Video(path).iter_batches(fps=1, batch_size=32)`` (lazy, streaming);
- ``baseline``: decode every frame to RGB (decord ``get_batch`` over consecutive chunks, as
  ``vr[:]`` would, but chunked so that it fits in memory) and keep one frame per second.
Reports sampled frames/s, peak RSS, and ratios. The test videos are made with libx264 at its
default keyframe interval (250 frames) and cached under ``--cache``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE = (480, 640)
FPS = 25


def make_video(path: Path, minutes: float) -> None:
    """A moving synthetic laparoscopic scene at 480p, 25 fps, libx264 defaults (GOP 250, B-frames)."""
    import av

    from medvid.synth.surgery import SurgicalWorld

    world = SurgicalWorld(np.random.default_rng(0), size=SIZE)
    base = [world.render(t, p, 0.5, np.eye(7, dtype=int)[p]) for p, t in enumerate(np.linspace(0, 30, 7))]
    n = int(round(minutes * 60 * FPS))
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.height, s.width, s.pix_fmt = *SIZE, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(n):
            img = np.roll(base[(i // (FPS * 20)) % len(base)], shift=(i % 200) - 100, axis=1)
            img[:8, : (i % SIZE[1])] = 255  # a moving bar so consecutive frames differ
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    tmp.rename(path)


def worker(method: str, path: str, fps: float) -> dict:
    t0 = time.perf_counter()
    n = 0
    checksum = 0
    if method == "medvid":
        from medvid.io.video import Video

        with Video(path) as v:
            for _, frames in v.iter_batches(fps=fps, batch_size=32):
                n += len(frames)
                checksum += int(frames[:, 0, 0, 0].sum())
    else:
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        total, step = len(vr), int(round(vr.get_avg_fps() / fps))
        for i in range(0, total, 64):
            frames = vr.get_batch(list(range(i, min(total, i + 64)))).asnumpy()  # every frame, RGB
            keep = frames[[k for k in range(len(frames)) if (i + k) % step == 0]]
            n += len(keep)
            checksum += int(keep[:, 0, 0, 0].sum())
    secs = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "frames": n, "seconds": round(secs, 2), "frames_per_s": round(n / secs, 1),
            "peak_rss_mb": round(rss_mb, 1), "checksum": checksum}


def run_in_subprocess(method: str, path: Path, fps: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(path), "--fps", str(fps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 60])
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medvid_bench"))
    ap.add_argument("--methods", nargs="+", default=["medvid", "baseline"])
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.fps)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    results = {}
    for minutes in args.minutes:
        path = args.cache / f"bench_{minutes:g}min_480p25.mp4"
        if not path.exists():
            t = time.perf_counter()
            make_video(path, minutes)
            print(f"generated {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for method in args.methods:
            r = run_in_subprocess(method, path, args.fps)
            results[(minutes, method)] = r
            print(json.dumps({"minutes": minutes, **r}), flush=True)
    print("\n| video | method | sampled frames/s | peak RSS (MB) |\n|---|---|---|---|")
    for (minutes, method), r in results.items():
        print(f"| {minutes:g} min | {method} | {r['frames_per_s']} | {r['peak_rss_mb']} |")
    for minutes in args.minutes:
        if (minutes, "medvid") in results and (minutes, "baseline") in results:
            a, b = results[(minutes, "medvid")], results[(minutes, "baseline")]
            assert a["checksum"] == b["checksum"] and a["frames"] == b["frames"], "methods returned different frames"
            print(f"{minutes:g} min: throughput medvid/baseline = {a['frames_per_s'] / b['frames_per_s']:.2f}x")
    lengths = sorted(args.minutes)
    if len(lengths) > 1 and all((m, "medvid") in results for m in lengths):
        lo, hi = results[(lengths[0], "medvid")], results[(lengths[-1], "medvid")]
        print(f"medvid peak RSS {lengths[-1]:g} min / {lengths[0]:g} min = {hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
