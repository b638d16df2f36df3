"""Video decoding benchmark: 1 fps sampling over long 25 fps 480p videos, medvid vs decode-everything.

    python bench/video.py --minutes 5 60            # generates (and caches) the videos first

For each length, each method runs in its own subprocess (so peak RSS is its own):
- ``medvid``: ``Video(path).iter_batches(fps=1, batch_size=32)`` (lazy, streaming);
- ``baseline``: decode every frame to RGB (decord ``get_batch`` over consecutive chunks, as
  ``vr[:]`` would, but chunked so that it fits in memory) and keep one frame per second;
- ``baseline_pyav``: the same with a plain PyAV loop (``frame.to_ndarray()`` for every frame).
Reports sampled frames/s, peak RSS, and ratios. The test videos (synthetic laparoscopy with
sensor noise, libx264 defaults: keyframe every 250 frames, B-frames) are cached under ``--cache``.
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


def make_video(path: Path, minutes: float, segment_s: float = 60.0) -> None:
    """A long 480p 25 fps laparoscopic video: one rendered, encoded minute repeated by remuxing.

    The minute is the synthetic world (camera motion, tools, phases) with mild sensor noise,
    encoded with libx264 defaults (keyframe interval 250, B-frames, closed GOPs), so repeating its
    packets with shifted timestamps is a valid stream and generating an hour takes seconds.
    """
    import av

    from medvid.io.video import write_video
    from medvid.synth.surgery import SurgicalWorld, make_timeline, render_video_frames

    rng = np.random.default_rng(0)
    world = SurgicalWorld(rng, size=SIZE)
    timeline = make_timeline(rng, duration_scale=segment_s / 50)  # at least segment_s long
    n = int(segment_s * FPS)
    noise = np.random.default_rng(1)

    def frames():
        for k, f in enumerate(render_video_frames(world, timeline)):
            if k >= n:
                return
            yield np.clip(f + noise.normal(0, 3, f.shape), 0, 255).astype(np.uint8)

    seg = path.with_suffix(".segment.mp4")
    n = write_video(seg, frames(), crf=23, gop=250)
    reps = max(1, int(round(minutes * 60 / segment_s)))
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        with av.open(str(seg)) as src:
            ostream = out.add_stream_from_template(src.streams.video[0])
            step = int(round(n / FPS / src.streams.video[0].time_base))
        for r in range(reps):
            with av.open(str(seg)) as src:
                for pkt in src.demux(src.streams.video[0]):
                    if pkt.dts is None:
                        continue
                    pkt.pts += r * step
                    pkt.dts += r * step
                    pkt.stream = ostream
                    out.mux(pkt)
    seg.unlink()
    tmp.rename(path)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM). Not ``getrusage``: on Linux its ru_maxrss
    carries over the parent's peak across fork+exec, which hides the child's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # non-Linux


def _checksum(frames: np.ndarray) -> int:
    return int(frames[:, ::7, ::11].astype(np.int64).sum())


def worker(method: str, path: str, fps: float) -> dict:
    t0 = time.perf_counter()
    n = 0
    checksum = 0
    if method == "medvid":
        from medvid.io.video import Video

        with Video(path) as v:
            for _, frames in v.iter_batches(fps=fps, batch_size=32):
                n += len(frames)
                checksum += _checksum(frames)
    elif method == "baseline_pyav":
        import av

        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            step = int(round(float(stream.average_rate) / fps))
            for k, frame in enumerate(c.decode(stream)):
                rgb = frame.to_ndarray(format="rgb24")
                if k % step == 0:
                    n += 1
                    checksum += _checksum(rgb[None])
    else:
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        total, step = len(vr), int(round(vr.get_avg_fps() / fps))
        for i in range(0, total, 64):
            frames = vr.get_batch(list(range(i, min(total, i + 64)))).asnumpy()  # every frame, RGB
            keep = frames[[k for k in range(len(frames)) if (i + k) % step == 0]]
            n += len(keep)
            checksum += _checksum(keep)
    secs = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
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
    ap.add_argument("--methods", nargs="+", default=["medvid", "baseline", "baseline_pyav"])
    ap.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest is kept (noisy machines)")
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
            runs = [run_in_subprocess(method, path, args.fps) for _ in range(args.repeats)]
            r = min(runs, key=lambda x: x["seconds"])
            r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
            results[(minutes, method)] = r
            print(json.dumps({"minutes": minutes, **r}), flush=True)
    print("\n| video | method | sampled frames/s | peak RSS (MB) |\n|---|---|---|---|")
    for (minutes, method), r in results.items():
        print(f"| {minutes:g} min | {method} | {r['frames_per_s']} | {r['peak_rss_mb']} |")
    for minutes in args.minutes:
        a = results.get((minutes, "medvid"))
        for base in ("baseline", "baseline_pyav"):
            b = results.get((minutes, base))
            if a and b:
                assert a["checksum"] == b["checksum"] and a["frames"] == b["frames"], f"{base} returned other frames"
                print(f"{minutes:g} min: throughput medvid/{base} = {a['frames_per_s'] / b['frames_per_s']:.2f}x, "
                      f"peak RSS medvid/{base} = {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}")
    lengths = sorted(args.minutes)
    if len(lengths) > 1 and all((m, "medvid") in results for m in lengths):
        lo, hi = results[(lengths[0], "medvid")], results[(lengths[-1], "medvid")]
        print(f"medvid peak RSS {lengths[-1]:g} min / {lengths[0]:g} min = {hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
