"""Echo preprocessing throughput: medvid's lazy path vs the decode-everything reference approach.

Three pipelines run side by side, in one process, over the same 50-file study set (JPEG Baseline
YBR_FULL_422 cine loops as machines write them, plus the usual RGB/RLE/JPEG-LS/MONOCHROME2 mix),
each producing an EchoPrime-style clip (16 frames, every 2nd frame, masked, 224², normalised):

- baseline  ``dcmread`` + ``pixel_array`` (all frames, pydicom's YBR→RGB), mask every frame, then pick 16
- medvid    ``EchoVideoDataset`` over ``medvid ingest`` output: decodes only the 16 frames, masks, preprocesses
- decode16  only decoding the 16 used frames (per-frame JPEG access), nothing else: the floor

Run:  .venv/bin/python bench/ingest.py [--files 50] [--rounds 2] [--rows 480 --cols 640]
Timing: file by file with the three pipelines in rotating order; per file the best of the rounds.
Prints a Markdown table and writes ``<work>/bench_ingest.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvid.config import load_config  # noqa: E402
from medvid.datasets.echo import EchoVideoDataset, clip_indices  # noqa: E402
from medvid.io.dicom import DicomCine, find_files, quiet_pydicom, to_rgb_uint8  # noqa: E402
from medvid.io.ingest_folder import IngestFolder  # noqa: E402
from medvid.io.regions import apply_mask, box_from_regions, box_mask  # noqa: E402
from medvid.synth.echo import synthesize  # noqa: E402
from medvid.transforms.clip import ClipPreprocess  # noqa: E402
from medvid.pipelines import ingest as ingest_job  # noqa: E402


def make_study_set(work: Path, n_files: int, rows: int, cols: int) -> tuple[Path, list[Path]]:
    """Synthesize (once) enough studies for ``n_files`` cine loops at a clinical frame size."""
    synth = work / f"synth_{rows}x{cols}"
    if not (synth / "views.csv").exists():
        synthesize(synth, studies=(n_files + 5) // 6, seed=0, loops_per_study=6, rows=rows, cols=cols,
                   frames_range=(48, 96), still_fraction=0.0)
    files = [p for p in find_files(synth / "dicom") if not p.name.endswith(".TXT")][:n_files]
    return synth, files


def baseline_clip(path: Path, pre: ClipPreprocess) -> tuple[object, int]:
    """The reference approach: decode and colour-convert every frame, mask them all, then take 16."""
    ds = dcmread(path)
    with quiet_pydicom():
        frames = to_rgb_uint8(ds.pixel_array, ds)  # all frames; YBR → RGB by pydicom, palette/grey → RGB
        box = box_from_regions(ds, ds.Rows, ds.Columns)
    if box is not None:
        frames = apply_mask(frames, box_mask(box, ds.Rows, ds.Columns))
    picked = frames[np.minimum(np.arange(0, 32, 2), len(frames) - 1)]
    return pre.from_frames(np.ascontiguousarray(picked)), len(frames)  # same resize code as medvid: fair


def decode16(path: Path) -> int:
    cine = DicomCine(path)
    return len(cine.frames(clip_indices(cine, 16, frame_stride=2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_bench_ingest"))
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=480)
    ap.add_argument("--cols", type=int, default=640)
    args = ap.parse_args()

    synth, files = make_study_set(args.work, args.files, args.rows, args.cols)
    root = synth / "dicom"
    out = args.work / f"ingest_{args.rows}x{args.cols}"
    cfg = load_config(ingest_job.Config, "ingest", None,
                      [f"dicom_root={root}", f"out={out}", "progress=false", "resume=false", "salt=bench"])
    keep = {p.relative_to(root).as_posix() for p in files}
    t0 = time.perf_counter()
    ingest_job.run(cfg)
    t_ingest = time.perf_counter() - t0
    ds = EchoVideoDataset(out, root, preprocess="echoprime")
    rel = IngestFolder(out).video_paths()
    order = [i for i, k in enumerate(ds.videos["video_key"]) if rel[k] in keep]
    paths = [root / rel[ds.videos["video_key"][i]] for i in order]
    pre = ClipPreprocess.from_preset("echoprime")
    total_frames = sum(int(n) for n in ds.videos["frames"].iloc[order])

    pipelines = {"baseline": lambda k: baseline_clip(paths[k], pre)[0], "medvid": lambda k: ds[order[k]]["video"],
                 "decode16": lambda k: decode16(paths[k])}
    names = list(pipelines)
    per_file = {name: np.full((args.rounds, len(paths)), np.inf) for name in names}
    outputs: dict[str, list] = {"baseline": [None] * len(paths), "medvid": [None] * len(paths)}
    for r in range(args.rounds):  # file by file, rotating the order: load spikes hit all three alike
        for k in range(len(paths)):
            for j in range(len(names)):
                name = names[(k + r + j) % len(names)]
                t0 = time.perf_counter()
                result = pipelines[name](k)
                per_file[name][r, k] = time.perf_counter() - t0
                if name in outputs:
                    outputs[name][k] = result
    best = {name: float(v.min(axis=0).sum()) for name, v in per_file.items()}  # best of rounds, per file
    ours, base_out = outputs["medvid"], outputs["baseline"]
    diff = max(float((a - b).abs().mean()) for a, b in zip(ours, base_out))
    n = len(paths)
    result = {
        "files": n, "frame_size": [args.rows, args.cols], "source_frames": total_frames, "rounds": args.rounds,
        "ingest_s": round(t_ingest, 2), "ingest_files_per_s": round(len(find_files(root)) / t_ingest, 1),
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "files_per_s": {k: round(n / v, 2) for k, v in best.items()},
        "clip_frames_per_s": {k: round(16 * n / v, 1) for k, v in best.items()},
        "speedup_vs_baseline": round(best["baseline"] / best["medvid"], 2),
        "medvid_over_decode16": round(best["medvid"] / best["decode16"], 2),
        "max_mean_abs_diff_vs_baseline": round(diff, 4),
        "formats": ds.videos["transfer_syntax_name"].iloc[order].value_counts().to_dict(),
    }
    (args.work / "bench_ingest.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\n| pipeline | s ({n} files) | files/s | clip frames/s |\n|---|---|---|---|")
    for k in ("baseline", "medvid", "decode16"):
        print(f"| {k} | {best[k]:.2f} | {n / best[k]:.1f} | {16 * n / best[k]:.0f} |")


if __name__ == "__main__":
    main()
