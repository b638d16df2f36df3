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

``--mixed --baseline-src DIR`` instead times ``medvid ingest`` per file on a mixed export as carts send it (loops in
five codecs plus H.264 and GE's private syntax, Doppler / M-mode / 2-D stills, TID 5200 measurement SRs, an export
log) laid out twice: as found by scanning, and as a media export written by pydicom's ``FileSet`` (DICOMDIR, files
``PT*/ST*/SE*/IM*``). Each ingest runs in a fresh interpreter (imports and the one-off UCUM unit registry that
measurement SRs need are not timed; the registry's time is reported apart) with this tree, and with the
checkout ``DIR`` (e.g. ``git worktree add /tmp/medvid_main main``) as the baseline, rounds interleaved; the best of
the rounds per export and tree. Writes ``<work>/bench_ingest_mixed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

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


# PW Doppler (s × cm/s, baseline 60 % down the strip) and M-mode (s × cm) regions under a 2-D reference image.
_STILL_REGIONS = {"DOPPLER": (3, 3, 4, 7, -2.0), "MMODE": (2, 1, 4, 3, 0.02)}


def _region(box: tuple[int, int, int, int], spatial: int, data_type: int, units: tuple[int, int],
            delta: tuple[float, float], ref_y: int = 0):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = spatial, data_type, 0
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = delta
    r.ReferencePixelX0, r.ReferencePixelY0 = 0, ref_y
    r.ReferencePixelPhysicalValueX = r.ReferencePixelPhysicalValueY = 0.0
    return r


def _h264(frames: np.ndarray) -> bytes:
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _measurement_sr(ds, image_uid: str):
    """A TID 5200 Comprehensive SR (LVEF, method of disks biplane) whose value was measured on ``image_uid``."""
    import highdicom as hd
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    num = hd.sr.NumContentItem(name=Code("18043-0", "LN", "Left ventricular Ejection fraction"), value=55.0,
                               unit=Code("%", "UCUM", "%"), relationship_type="CONTAINS")
    num.ContentSequence = hd.sr.ContentSequence([
        hd.sr.CodeContentItem(name=Code("370129005", "SCT", "Measurement Method"),
                              value=Code("125207", "DCM", "Method of disks, biplane"),
                              relationship_type="HAS CONCEPT MOD"),
        hd.sr.ImageContentItem(name=Code("121112", "DCM", "Source of Measurement"),
                               referenced_sop_class_uid=str(ds.SOPClassUID), referenced_sop_instance_uid=image_uid,
                               relationship_type="INFERRED FROM")])
    section = hd.sr.ContainerContentItem(name=Code("29426-2", "LN", "Left Ventricle"), relationship_type="CONTAINS")
    section.ContentSequence = hd.sr.ContentSequence([num])
    root = hd.sr.ContainerContentItem(name=Code("125200", "DCM", "Adult Echocardiography Procedure Report"),
                                      template_id="5200")
    root.ContentSequence = hd.sr.ContentSequence([section], is_root=False)
    return hd.sr.ComprehensiveSR(evidence=[ds], content=root, series_instance_uid=generate_uid(), series_number=99,
                                 sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medvid-bench",
                                 record_evidence=False)


def make_mixed_export(work: Path, studies: int, rows: int, cols: int) -> tuple[Path, Path]:
    """(scan layout root, DICOMDIR layout root) of the mixed export, built once."""
    import copy

    from pydicom.encaps import encapsulate
    from pydicom.fileset import FileSet
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    from medvid.io.dicom import GE_PRIVATE_IMPLICIT

    synth, media = work / f"mixed_{studies}x{rows}x{cols}", work / f"mixed_{studies}x{rows}x{cols}_dicomdir"
    if (media / "DICOMDIR").exists():
        return synth / "dicom", media
    synthesize(synth, studies=studies, seed=3, loops_per_study=4, rows=rows, cols=cols, frames_range=(24, 48),
               still_fraction=1.0, format_weights={"jpeg_ybr": 0.5, "rgb": 0.15, "rle": 0.15, "jpegls": 0.05,
                                                   "mono": 0.15})
    for still_path in sorted((synth / "dicom").rglob("SC001")):
        folder, still = still_path.parent, dcmread(still_path)
        top = rows * 2 // 5
        for name, (spatial, data_type, ux, uy, dy) in _STILL_REGIONS.items():
            ds = copy.deepcopy(still)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SequenceOfUltrasoundRegions = [
                _region((cols // 4, 0, cols * 3 // 4 - 1, top - 1), 1, 1, (3, 3), (0.03, 0.03)),
                _region((0, top, cols - 1, rows - 1), spatial, data_type, (ux, uy), (0.005, dy),
                        ref_y=(rows - top) * 3 // 5 if spatial == 3 else 0)]
            ds.save_as(folder / f"{name}1", enforce_file_format=True)
            if name == "DOPPLER":
                _measurement_sr(ds, str(ds.SOPInstanceUID)).save_as(folder / "SR001", enforce_file_format=True)
        loops = [p for p in sorted(folder.iterdir()) if p.name.startswith("US")]
        video = dcmread(loops[0])
        frames = DicomCine(loops[0]).frames()
        video.SOPInstanceUID = video.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        video.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # H.264 High Profile
        video.PhotometricInterpretation = "YBR_PARTIAL_420"
        video.SamplesPerPixel, video.PlanarConfiguration = 3, 0
        video.PixelData = encapsulate([_h264(frames)], fragments_per_frame=1)
        video["PixelData"].VR = "OB"
        video.save_as(folder / "VID001", enforce_file_format=True)
        native = next((p for p in loops if dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                       == "1.2.840.10008.1.2.1"), None)
        if native is not None:
            ge = dcmread(native)
            ge.SOPInstanceUID = ge.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ge.file_meta.TransferSyntaxUID = GE_PRIVATE_IMPLICIT
            dcmwrite(folder / "GE001", ge, implicit_vr=True, little_endian=True, enforce_file_format=True)
    fs = FileSet()
    for path in find_files(synth / "dicom"):
        try:
            fs.add(path)
        except (ValueError, KeyError, AttributeError, InvalidDicomError):
            continue  # the export log: not DICOM
    fs.write(media)
    return synth / "dicom", media


_WORKER = """
import json, sys, time
import av, highdicom, scipy.ndimage  # noqa: F401 - imported before timing: one-off costs, not per file
import medvid.ingest.dicom_export, medvid.io.dicom_video, medvid.io.echo_sr  # noqa: F401
from medvid.config import load_config
from medvid.ingest import IngestSettings, ingest
t0 = time.perf_counter()
medvid.io.echo_sr.load_rules()  # builds the UCUM unit registry once per process (pint): seconds, not per file
setup = time.perf_counter() - t0
cfg = load_config(IngestSettings, "ingest", None, [f"dicom_root={sys.argv[1]}", f"out={sys.argv[2]}", "progress=false",
                                                   "resume=false", "overwrite=true", "salt=bench"])
t0 = time.perf_counter()
summary = ingest(cfg)
print(json.dumps({"s": time.perf_counter() - t0, "units_setup_s": setup, "files": summary["files"],
                  "videos": summary["videos"],
                  "stills": summary.get("stills"), "errors": summary["errors_by_reason"],
                  "measurement_files": summary.get("measurement_files", 0)}))
"""


def time_ingest(src: Path, root: Path, out: Path) -> dict:
    """``medvid ingest root`` with the medvid of the source tree ``src``, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(root), str(out)], env=env, cwd=src, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mixed_main(args: argparse.Namespace) -> None:
    flat, media = make_mixed_export(args.work, args.studies, args.rows, args.cols)
    trees = {"this": Path(__file__).resolve().parents[1], "baseline": args.baseline_src.resolve()}
    exports = {"mixed (scan)": flat, "DICOMDIR media": media}
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for i, (label, root) in enumerate(exports.items()):
            for j in range(len(trees)):
                tree = list(trees)[(r + i + j) % len(trees)]
                out = args.work / f"out_{tree}_{i}"
                runs.setdefault((label, tree), []).append(time_ingest(trees[tree], root, out))
    table = {}
    for label in exports:
        best = {tree: min(runs[(label, tree)], key=lambda x: x["s"]) for tree in trees}
        table[label] = {tree: {**b, "ms_per_file": round(1000 * b["s"] / b["files"], 2),
                               "ms_per_file_median": round(1000 * float(np.median([x["s"] for x in runs[(label, tree)]]))
                                                           / b["files"], 2)} for tree, b in best.items()}
        table[label]["ratio_this_over_baseline"] = round(best["this"]["s"] / best["baseline"]["s"], 3)
    result = {"studies": args.studies, "frame_size": [args.rows, args.cols], "rounds": args.rounds, "exports": table}
    (args.work / "bench_ingest_mixed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| export | files | this: ms/file best (median) | baseline: ms/file best (median) | this / baseline |"
          "\n|---|---|---|---|---|")
    for label, row in table.items():
        this, base = row["this"], row["baseline"]
        print(f"| {label} | {this['files']} | {this['ms_per_file']} ({this['ms_per_file_median']}) | "
              f"{base['ms_per_file']} ({base['ms_per_file_median']}) | {row['ratio_this_over_baseline']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medvid_bench_ingest"))
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=480)
    ap.add_argument("--cols", type=int, default=640)
    ap.add_argument("--mixed", action="store_true", help="time medvid ingest on the mixed and DICOMDIR exports")
    ap.add_argument("--studies", type=int, default=8, help="--mixed: studies in the mixed export")
    ap.add_argument("--baseline-src", type=Path, help="--mixed: source tree of the medvid to compare with")
    args = ap.parse_args()
    if args.mixed:
        if args.baseline_src is None or not (args.baseline_src / "medvid").is_dir():
            ap.error("--mixed needs --baseline-src DIR, a medvid checkout "
                     "(e.g. git worktree add /tmp/medvid_main main)")
        return mixed_main(args)

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
