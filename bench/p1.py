"""P1: echo DICOM → model tensors (16 frames, every 2nd, 224²) beside the read + decode floor, in one process.

Study set (made by the bench, cached in ``--work``): ``--files`` synthetic cine loops from ``medvid.synth.echo``,
half at 480×640 and half at 600×800, JPEG Baseline (YBR_FULL_422) and RGB, plus 5 copies of pydicom-data's
``color3d_jpeg_baseline.dcm`` when pydicom-data is installed (copies of one SOP instance: ingest keeps one).
``medvid ingest`` indexes it (timed separately). Per loop, in rotating order, best of ``--rounds``:

- floor        read + decode the 16 frames of the clip (``DicomCine.frames``), nothing else
- medvid       ``EchoVideoDataset`` (EchoPrime preset, fan mask) with the loop's fan already stored beside the
               ingest (``sectors.jsonl``): every read after a loop's first (epochs, bank, draft, probe)
- medvid_first the same with an empty sector store: the loop's first read, which estimates its fan
- reference    EchoPrime-style from formats.md facts: decode every frame (pydicom), blank outside the regions
               box on every frame, take frames 0, 2, …, 30, centre square with 10 % zoom, 224², normalise

Run:  .venv/bin/python bench/p1.py [--files 50] [--rounds 2]
Prints JSON (ratios to the floor) and a Markdown table; writes ``<work>/bench_p1.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvid.config import load_config  # noqa: E402
from medvid.datasets.echo import EchoVideoDataset, clip_indices  # noqa: E402
from medvid.io.dicom import DicomCine, find_files, quiet_pydicom, to_rgb_uint8  # noqa: E402
from medvid.io.ingest_folder import IngestFolder  # noqa: E402
from medvid.io.regions import box_from_regions  # noqa: E402
from medvid.io.sectors import SectorStore  # noqa: E402
from medvid.pipelines import ingest as ingest_job  # noqa: E402
from medvid.synth.echo import synthesize  # noqa: E402

MEAN = torch.tensor((29.110628, 28.076836, 29.096405)).view(3, 1, 1, 1)  # formats.md: EchoPrime's, 0–255 scale
STD = torch.tensor((47.989223, 46.456997, 47.20083)).view(3, 1, 1, 1)


def make_set(work: Path, n_files: int) -> Path:
    """The study set under ``work/dicom`` (made once; the synthetic studies are kept for reruns)."""
    root, tmp = work / "dicom", work / "dicom.partial"
    if root.is_dir():
        return root
    shutil.rmtree(tmp, ignore_errors=True)
    for rows, cols, n in ((480, 640, n_files // 2), (600, 800, n_files - n_files // 2)):
        synth = work / f"synth_{rows}x{cols}"
        if not (synth / "views.csv").exists():  # written last by synthesize
            synthesize(synth, studies=(n + 5) // 6, seed=rows, loops_per_study=6, rows=rows, cols=cols,
                       frames_range=(48, 96), still_fraction=0.0, format_weights={"jpeg_ybr": 0.85, "rgb": 0.15})
        for k, f in enumerate([p for p in find_files(synth / "dicom") if not p.name.endswith(".TXT")][:n]):
            (tmp / f"{rows}x{cols}").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp / f"{rows}x{cols}" / f"loop{k:03d}.dcm")
    try:
        from pydicom.data import get_testdata_file

        real = get_testdata_file("color3d_jpeg_baseline.dcm", download=False)
    except Exception:  # noqa: BLE001 - pydicom-data not installed: synthetic loops only
        real = None
    if real:
        (tmp / "pydicom").mkdir()
        for k in range(5):
            shutil.copy(real, tmp / "pydicom" / f"copy{k}.dcm")
    tmp.rename(root)  # complete sets only: an interrupted run starts over
    return root


def floor(path: Path) -> int:
    cine = DicomCine(path)
    return len(cine.frames(clip_indices(cine, 16, frame_stride=2)))


def reference(path: Path) -> torch.Tensor:
    """EchoPrime-style preprocessing written from formats.md: every frame decoded and masked, then 16 picked."""
    ds = dcmread(path)
    with quiet_pydicom():
        frames = to_rgb_uint8(ds.pixel_array, ds)  # all frames; pydicom's YBR → RGB
        box = box_from_regions(ds, ds.Rows, ds.Columns)
    if box is not None:
        keep = np.zeros(frames.shape[1:3], bool)
        keep[box[1]:box[3], box[0]:box[2]] = True
        frames = frames * keep[None, :, :, None]
    clip = torch.from_numpy(frames[np.arange(0, 32, 2) % len(frames)]).permute(3, 0, 1, 2).float()
    side = min(clip.shape[2:])
    y0, x0 = (clip.shape[2] - side) // 2, (clip.shape[3] - side) // 2
    cut = int(round(side * 0.1))
    clip = clip[:, :, y0 + cut:y0 + side - cut, x0 + cut:x0 + side - cut]
    clip = torch.nn.functional.interpolate(clip, size=(224, 224), mode="bilinear", antialias=True)
    return (clip - MEAN) / STD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_bench_p1"))
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    root = make_set(args.work, args.files)
    out = args.work / "ingest"
    cfg = load_config(ingest_job.Config, "ingest", None,
                      [f"dicom_root={root}", f"out={out}", "progress=false", "resume=false", "salt=bench"])
    t0 = time.perf_counter()
    ingest_job.run(cfg)
    t_ingest = time.perf_counter() - t0
    (out / "sectors.jsonl").unlink(missing_ok=True)  # a rerun starts with no stored fans
    ds = EchoVideoDataset(out, root, preprocess="echoprime")
    rel = IngestFolder(out).video_paths()
    paths = [root / rel[k] for k in ds.videos["video_key"]]
    n = len(paths)
    for i in range(n):  # store every loop's fan (what the first epoch or job leaves behind)
        ds[i]
    scratch = Path(tempfile.mkdtemp(prefix="p1_sectors_"))

    def first_read(i: int) -> torch.Tensor:
        fresh = Path(tempfile.mkdtemp(dir=scratch))
        ds_first.sectors = SectorStore(fresh)  # empty: the fan is estimated (and stored)
        return ds_first[i]["video"]

    ds_first = EchoVideoDataset(out, root, preprocess="echoprime")
    pipelines = {"floor": lambda i: floor(paths[i]), "medvid": lambda i: ds[i]["video"],
                 "medvid_first": first_read, "reference": lambda i: reference(paths[i])}
    names = list(pipelines)
    per = {name: np.full((args.rounds, n), np.inf) for name in names}
    outputs: dict[str, list] = {"medvid": [None] * n, "reference": [None] * n}
    for r in range(args.rounds):  # loop by loop, rotating the order: load spikes hit all pipelines alike
        for i in range(n):
            for j in range(len(names)):
                name = names[(i + r + j) % len(names)]
                t0 = time.perf_counter()
                value = pipelines[name](i)
                per[name][r, i] = time.perf_counter() - t0
                if name in outputs:
                    outputs[name][i] = value
    shutil.rmtree(scratch)
    best = {name: float(v.min(axis=0).sum()) for name, v in per.items()}
    diff = [float((a - b).abs().mean()) for a, b in zip(outputs["medvid"], outputs["reference"])]
    result = {
        "loops": n, "files": len(find_files(root)), "rounds": args.rounds,
        "ingest_s": round(t_ingest, 2), "seconds": {k: round(v, 3) for k, v in best.items()},
        "over_floor": {k: round(v / best["floor"], 2) for k, v in best.items()},
        "reference_over_medvid": round(best["reference"] / best["medvid"], 2),
        "mean_abs_diff_vs_reference": {"median": round(float(np.median(diff)), 4), "max": round(max(diff), 4)},
        "formats": ds.videos["transfer_syntax_name"].value_counts().to_dict(),
    }
    (args.work / "bench_p1.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\n| pipeline | s ({n} loops) | clips/s | × floor |\n|---|---|---|---|")
    for k in names:
        print(f"| {k} | {best[k]:.2f} | {n / best[k]:.1f} | {best[k] / best['floor']:.2f} |")


if __name__ == "__main__":
    main()
