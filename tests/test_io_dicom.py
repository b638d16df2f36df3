"""medvid.io.dicom / regions on files someone else wrote (pydicom + pydicom-data) and on broken input."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut

import medvid.io.dicom as dicom
from echo_testdata import ingest
from medvid.errors import MedvidError
from medvid.io.dicom import REASONS, DicomCine, DicomFileError, frame_timing, inspect_file
from medvid.io.regions import box_from_mask, box_from_regions, estimate_sector_mask

US_FILES = ["examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm", "OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm",
            "OBXXXX1A_rle_2frame.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm",
            "US1_J2KI.dcm", "US1_J2KR.dcm", "US1_UNCI.dcm", "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm",
            "gdcm-US-ALOKA-16_big.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "ExplVR_BigEnd.dcm", "color-pl.dcm"]
# JPEG Baseline written by other encoders (dcmtk, gdcm), YBR_FULL and YBR_FULL_422, odd sizes: the fast path.
OTHER_JPEG = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm",
              "SC_rgb_jpeg_lossy_gdcm.dcm", "SC_rgb_small_odd_jpeg.dcm"]


def _testfile(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def _expected_cine(path: str) -> dict | None:
    """Independent of medvid: pydicom's full read says whether a file is a US multi-frame loop."""
    try:
        with dicom.quiet_pydicom():  # some test files are deliberately malformed: pydicom warns
            ds = dcmread(path, force=False)
    except Exception:  # noqa: BLE001 - not our business here: anything pydicom can't read is not a loop
        return None
    if str(ds.get("Modality", "")) != "US" or int(ds.get("NumberOfFrames", 1) or 1) < 2 or "PixelData" not in ds:
        return None
    fps = 1000.0 / float(ds.FrameTime) if ds.get("FrameTime") else None
    return {"frames": int(ds.NumberOfFrames), "rows": int(ds.Rows), "cols": int(ds.Columns), "fps": fps,
            "sop": str(ds.SOPInstanceUID)}


@pytest.fixture(scope="module")
def pydicom_ingest(tmp_path_factory):
    """Every pydicom / pydicom-data test file (261), linked into one tree and ingested once."""
    files = [f for f in get_testdata_files() if os.path.isfile(f)]
    assert len(files) >= 240, "pydicom-data should be installed (test extra)"
    root = tmp_path_factory.mktemp("pydicom_files")
    for i, f in enumerate(files):
        (root / f"{i:03d}_{Path(f).name}").symlink_to(f)
    out = tmp_path_factory.mktemp("pydicom_ingest")
    summary = ingest(root, out, "salt=test-salt", "keep_paths=true", "follow_symlinks=true")
    return files, root, out, summary


def test_every_pydicom_file_is_a_row_or_a_typed_error(pydicom_ingest):
    files, _, out, summary = pydicom_ingest
    videos = pd.read_parquet(out / "videos.parquet")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    stills = pd.read_csv(out / "stills.csv")
    # every file is a loop, a still, a typed error, a measurement SR read item by item (dcmtk's test-SR.dcm) or a
    # DICOMDIR index (pydicom's dicomdirtests, not an error)
    assert summary["index_files"] >= 2 and summary["stills"] == len(stills) > 0
    assert len(videos) + len(stills) + len(errors) + summary.get("measurement_files", 0) + summary["index_files"] \
        == len(files) == summary["files"]
    assert summary.get("measurement_files", 0) <= 2
    assert {e["reason"] for e in errors} <= set(REASONS)
    assert all(e["detail"] for e in errors)
    expected = {Path(f).name: c for f in files if (c := _expected_cine(f))}
    assert {"examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm", "OBXXXX1A_2frame.dcm"} <= set(expected)
    got = {Path(p).name.split("_", 1)[1]: row for p, row in zip(videos["path"], videos.to_dict("records"))}
    assert set(got) == set(expected)
    for name, want in expected.items():
        row = got[name]
        assert (row["frames"], row["rows"], row["cols"]) == (want["frames"], want["rows"], want["cols"]), name
        if want["fps"] is None:
            assert row["fps"] is None or np.isnan(row["fps"])
        else:
            assert row["fps"] == pytest.approx(want["fps"], rel=1e-3)
    ybr = got["color3d_jpeg_baseline.dcm"]
    assert ybr["photometric_interpretation"] == "YBR_FULL_422" and ybr["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert ybr["sector_source"] == "regions" and list(ybr["sector_box"]) == [84, 31, 596, 415]
    reasons = {Path(e["path"]).name.split("_", 1)[1]: e["reason"] for e in errors}
    assert reasons["CT_small.dcm"] == "not_ultrasound"
    assert reasons["rtplan.dcm"] == "no_pixel_data"
    assert "DICOMDIR" not in reasons and "dicomdir" not in {e["reason"] for e in errors}
    still_types = {Path(p).name.split("_", 1)[1]: t for p, t in zip(stills["path"], stills["still_type"])}
    assert still_types["US1_UNCI.dcm"] == still_types["OBXXXX1A.dcm"] == "2d"  # one-frame US Images are stills
    assert set(stills["modality"]) == {"US"}


@pytest.mark.parametrize("name", US_FILES + OTHER_JPEG)
def test_colours_match_pydicom_rgb_decode(name):
    path = _testfile(name)
    cine = DicomCine(path)
    idx = sorted({0, cine.n_frames - 1})
    ours = cine.frames(idx)
    ds = dcmread(path)
    ref = ds.pixel_array  # pydicom 3 converts YBR to RGB by default
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        ref = apply_color_lut(ref, ds)
        if ref.max() > 255:
            ref = ref >> 8
    ref = (ref[None] if cine.n_frames == 1 else ref)[idx]
    if ref.ndim == 3:
        ref = np.repeat(ref[..., None], 3, axis=-1)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    if cine.fast_path:  # Pillow vs pylibjpeg: both JPEG decoders, different upsampling/rounding
        assert diff.mean() < 0.5 and diff.max() <= 8
    else:
        assert diff.max() == 0


def test_colour_channel_order_is_rgb():
    """The reference pipeline's known bug: YBR read as BGR gives a green tint. Red must stay red."""
    ours = DicomCine(_testfile("examples_ybr_color.dcm")).frames([0]).astype(float)
    ref = dcmread(_testfile("examples_ybr_color.dcm")).pixel_array[0].astype(float)
    swapped = np.abs(ours[0][..., ::-1] - ref).mean()
    assert np.abs(ours[0] - ref).mean() < 0.5 < swapped


def test_decodes_only_the_frames_asked_for(monkeypatch):
    calls = []
    real = dicom.get_frame
    monkeypatch.setattr(dicom, "get_frame", lambda buf, i, **kw: calls.append(i) or real(buf, i, **kw))
    cine = DicomCine(_testfile("color3d_jpeg_baseline.dcm"))
    idx = np.arange(0, 32, 2)
    frames = cine.frames(idx)
    assert sorted(calls) == list(idx) and frames.shape == (16, 480, 640, 3)
    calls.clear()
    cine.frames([5, 5, 3])  # repeats decoded once, returned in the order asked
    assert sorted(calls) == [3, 5]
    full = dcmread(_testfile("color3d_jpeg_baseline.dcm")).pixel_array[idx]
    assert np.abs(frames.astype(int) - full.astype(int)).mean() < 0.5


def test_non_jpeg_path_passes_indices_to_pydicom(monkeypatch):
    seen = []
    real = dicom.iter_pixels
    monkeypatch.setattr(dicom, "iter_pixels", lambda src, indices=None, **kw: seen.append(list(indices)) or real(src, indices=indices, **kw))
    cine = DicomCine(_testfile("OBXXXX1A_rle_2frame.dcm"))
    assert not cine.fast_path
    cine.frames([1])
    assert seen == [[1]]


def test_frame_timing_tags():
    ds = Dataset()
    ds.FrameTimeVector = [0, 20, 20, 40]
    times, fps, src = frame_timing(ds, 4)
    assert src == "FrameTimeVector" and np.allclose(times, [0, 0.02, 0.04, 0.08]) and fps == pytest.approx(50)
    ds = Dataset()
    ds.CineRate = 60
    times, fps, src = frame_timing(ds, 3)
    assert (src, fps) == ("CineRate", 60.0) and np.allclose(times, [0, 1 / 60, 2 / 60])
    ds = Dataset()
    ds.RecommendedDisplayFrameRate = 25
    assert frame_timing(ds, 2)[1:] == (25.0, "RecommendedDisplayFrameRate")
    ds.FrameTime = "33.333"
    assert frame_timing(ds, 2)[2] == "FrameTime"
    assert frame_timing(Dataset(), 5) == (None, None, "none")


def test_sector_box_from_regions_matches_the_tags():
    ds = dcmread(_testfile("color3d_jpeg_baseline.dcm"), stop_before_pixels=True)
    region = ds.SequenceOfUltrasoundRegions[0]
    box = box_from_regions(ds, ds.Rows, ds.Columns)
    assert box == (region.RegionLocationMinX0, region.RegionLocationMinY0,
                   region.RegionLocationMaxX1 + 1, region.RegionLocationMaxY1 + 1)


def test_sector_estimated_from_moving_pixels_ignores_text_and_ecg():
    """A real cine (color3d) without its regions: the moving area is inside the regions box."""
    cine = DicomCine(_testfile("color3d_jpeg_baseline.dcm"))
    frames = cine.frames(np.linspace(0, cine.n_frames - 1, 8).astype(int))
    x0, y0, x1, y1 = box_from_regions(cine.ds, cine.rows, cine.cols)
    est = box_from_mask(estimate_sector_mask(frames))
    assert est is not None
    assert est[0] >= x0 - 4 and est[1] >= y0 - 4 and est[2] <= x1 + 4 and est[3] <= y1 + 4
    assert (est[2] - est[0]) * (est[3] - est[1]) > 0.4 * (x1 - x0) * (y1 - y0)
    assert estimate_sector_mask(np.repeat(frames[:1], 4, axis=0)) is None  # a still image has no sector


# ---------------------------------------------------------------------------------------------- bad input
def _bad_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "P1234567" / "20200101").mkdir(parents=True)
    good = root / "P1234567" / "20200101"
    for name in ("examples_ybr_color.dcm", "OBXXXX1A_2frame.dcm"):
        (good / name).write_bytes(_testfile(name).read_bytes())
    data = _testfile("color3d_jpeg_baseline.dcm").read_bytes()
    (root / "cut_jpeg").write_bytes(data[: len(data) // 2])
    native = _testfile("OBXXXX1A_2frame.dcm").read_bytes()
    (root / "cut_native.dcm").write_bytes(native[:-1000])
    (root / "cut_header.dcm").write_bytes(data[:300])
    (root / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "empty").write_bytes(b"")
    (root / "report.txt").write_text("not a dicom file")
    ds = dcmread(_testfile("examples_ybr_color.dcm"))
    del ds.PixelData
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.save_as(root / "no_pixels.dcm")
    (root / "locked.dcm").write_bytes(_testfile("OBXXXX1A_2frame.dcm").read_bytes())
    return root


def test_bad_files_get_typed_reasons_and_nothing_else_is_lost(tmp_path, monkeypatch):
    root = _bad_tree(tmp_path)
    real_open = open

    def guarded_open(file, *args, **kwargs):  # tests run as root, where chmod 000 stops nothing
        if str(file).endswith("locked.dcm"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(dicom, "open", guarded_open, raising=False)
    out = tmp_path / "out"
    summary = ingest(root, out, "keep_paths=true")
    errors = {Path(e["path"]).name: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert {k: v["reason"] for k, v in errors.items()} == {
        "cut_jpeg": "truncated", "cut_native.dcm": "truncated", "cut_header.dcm": "truncated",
        "random.bin": "not_dicom", "empty": "not_dicom", "report.txt": "not_dicom",
        "no_pixels.dcm": "no_pixel_data", "locked.dcm": "unreadable"}
    videos = pd.read_parquet(out / "videos.parquet")
    assert sorted(Path(p).name for p in videos["path"]) == ["OBXXXX1A_2frame.dcm", "examples_ybr_color.dcm"]
    assert summary["videos"] == 2 and summary["errors"] == 8
    for e in errors.values():  # details never quote the path or its components
        assert "P1234567" not in e["detail"] and str(tmp_path) not in e["detail"]


def test_inspect_file_raises_typed_error(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(DicomFileError) as info:
        inspect_file(bad)
    assert info.value.reason == "not_dicom"
    with pytest.raises(DicomFileError) as info:
        inspect_file(_testfile("CT_small.dcm"))
    assert info.value.reason == "not_ultrasound"
    assert inspect_file(_testfile("CT_small.dcm"), modalities=(), min_frames=1).n_frames == 1


def test_unsupported_transfer_syntax_is_typed(tmp_path, monkeypatch):
    src = _testfile("examples_ybr_color.dcm")

    class NoDecoder:
        is_available = False

    monkeypatch.setattr(dicom, "get_decoder", lambda uid: NoDecoder())
    with pytest.raises(DicomFileError) as info:
        inspect_file(src)
    assert info.value.reason == "unsupported_transfer_syntax"


def test_empty_directory_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedvidError, match="no usable cine loop among 0 file"):
        ingest(tmp_path / "empty", tmp_path / "out")
    assert (tmp_path / "out" / "errors.jsonl").read_text() == ""
    with pytest.raises(MedvidError, match="not a folder"):
        ingest(tmp_path / "missing", tmp_path / "out2")


def test_extended_offset_table_is_used(tmp_path, monkeypatch):
    from pydicom.encaps import encapsulate_extended, generate_frames

    src = _testfile("examples_ybr_color.dcm")
    ds = dcmread(src)
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    ds.save_as(tmp_path / "eot.dcm")
    seen = []
    real = dicom.get_frame
    monkeypatch.setattr(dicom, "get_frame", lambda buf, i, **kw: seen.append(kw["extended_offsets"]) or real(buf, i, **kw))
    with_table = DicomCine(tmp_path / "eot.dcm").frames([3, 29])
    assert len(seen) == 2 and all(s is not None for s in seen)
    assert np.array_equal(with_table, DicomCine(src).frames([3, 29]))


def test_error_details_keep_dicom_words_and_drop_values_and_paths():
    from medvid.io.dicom import scrub

    text = scrub("the 'DICM' prefix is missing; bad value 'DOE^JANE' for 'PatientName' in /exports/P1234567/US001",
                 "/exports/P1234567/US001")
    assert "'DICM' prefix" in text and "'PatientName'" in text
    assert "DOE" not in text and "P1234567" not in text and "US001" not in text


# ------------------------------------------------------------------------------------------ hostile headers
def _hostile(tmp_path: Path, name: str, source: str = "OBXXXX1A_2frame.dcm", **tags) -> Path:
    """A pydicom test loop (600×800 grey, 2 frames) with header values changed: a small file that lies."""
    ds = dcmread(_testfile(source))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / name)
    return tmp_path / name


def test_a_header_declaring_billions_of_frames_is_refused_before_allocating(tmp_path):
    """NumberOfFrames = 2³¹−1 in a small file: refused as too_large before frame times are sized by it (on main it
    allocates ~17 GB; here the address space is capped at 1.5 GiB in a child process, so main fails cleanly)."""
    import subprocess
    import sys

    path = _hostile(tmp_path, "frames.dcm", NumberOfFrames=2**31 - 1, FrameTime="33.3")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
            "from medvid.io.dicom import DicomFileError, inspect_file\n"
            "try:\n    inspect_file(sys.argv[1])\nexcept DicomFileError as e:\n    print(e.reason, '|', e.detail)\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.startswith("too_large | header declares 2147483647 frame(s) of 600×800×1"), run.stdout


def test_declared_size_is_bounded_by_a_setting(tmp_path):
    path = _hostile(tmp_path, "big.dcm", NumberOfFrames=2)  # 2 × 600 × 800 = 0.9 MiB declared
    with pytest.raises(DicomFileError, match="too_large: header declares 2 frame"):
        inspect_file(path, max_bytes=1 << 19)
    assert inspect_file(path, max_bytes=1 << 20).n_frames == 2


def test_a_deflate_bomb_is_inflated_only_up_to_the_bound(tmp_path):
    """A deflated file of ~0.3 MB that inflates to 96 MB: the bounded streaming inflater stops at the bound (only
    a few MB are ever allocated) and the file is too_large; under the bound it decodes as before."""
    import tracemalloc

    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    ds = dcmread(_testfile("OBXXXX1A_2frame.dcm"))
    ds.NumberOfFrames, ds.PixelData = 200, bytes(200 * 600 * 800)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DicomFileError, match="too_large: deflated dataset inflates to more than 4 MiB"):
            inspect_file(path, max_bytes=4 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    small, plain = tmp_path / "small.dcm", tmp_path / "plain.dcm"
    ds.NumberOfFrames, ds.PixelData = 3, bytes(range(256)) * (3 * 600 * 800 // 256)
    ds.save_as(small, enforce_file_format=True)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(plain, enforce_file_format=True)
    cine = inspect_file(small, max_bytes=4 << 20)
    assert cine.transfer_syntax == DeflatedExplicitVRLittleEndian and cine.n_frames == 3
    assert np.array_equal(cine.frames([1, 2]), DicomCine(plain).frames([1, 2]))


def test_frames_the_pixel_data_cannot_hold_are_refused_before_decoding(tmp_path, monkeypatch):
    """An RLE header claiming 4096×4096 (16384² in the red-team file) over a few KB of data, and native Pixel Data
    shorter than its frames: truncated, found from sizes alone (no frame is decoded)."""
    monkeypatch.setattr(DicomCine, "frames", lambda *a, **k: pytest.fail("decoded a frame"))
    rle = _hostile(tmp_path, "rle.dcm", "OBXXXX1A_rle_2frame.dcm", Rows=4096, Columns=4096)
    with pytest.raises(DicomFileError, match="truncated: .* bytes of encapsulated pixel data cannot hold 2 frame"):
        inspect_file(rle)
    native = _hostile(tmp_path, "native.dcm", NumberOfFrames=3)  # 2 frames of data, 3 declared
    with pytest.raises(DicomFileError, match="truncated: Pixel Data holds 960000 bytes; 3 frame"):
        inspect_file(native)


def test_hostile_files_are_errors_and_the_batch_goes_on(tmp_path):
    """Through ingest: each hostile file is an error row with its reason (max_pixel_mb bounds sizes), the good
    loop next to them is ingested."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(_testfile("OBXXXX1A_2frame.dcm"), root / "good.dcm")
    _hostile(root, "frames.dcm", NumberOfFrames=2**31 - 1, SOPInstanceUID="1.2.3.4")
    _hostile(root, "big.dcm", "OBXXXX1A_rle_2frame.dcm", NumberOfFrames=5, SOPInstanceUID="1.2.3.5")
    summary = ingest(root, tmp_path / "out", "max_pixel_mb=2", "keep_paths=true")
    errors = {e["path"]: e for e in map(json.loads, (tmp_path / "out" / "errors.jsonl").read_text().splitlines())}
    assert summary["videos"] == 1 and {p: e["reason"] for p, e in errors.items()} == {
        "frames.dcm": "too_large", "big.dcm": "too_large"}
    assert "more than 2 MiB" in errors["big.dcm"]["detail"]


def test_links_out_of_the_dicom_root_are_refused_unless_followed(tmp_path):
    """A file or folder link under the DICOM root that leads outside it is an outside_root error (nothing read);
    links that stay inside are fine; follow_symlinks=true reads them."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(_testfile("OBXXXX1A_2frame.dcm"), root / "a" / "inside.dcm")
    _hostile(outside, "secret.dcm", SOPInstanceUID="1.2.3.6")
    _hostile(outside, "secret2.dcm", SOPInstanceUID="1.2.3.7")
    (root / "file_link.dcm").symlink_to(outside / "secret.dcm")
    (root / "dir_link").symlink_to(outside)
    (root / "inside_link").symlink_to(root / "a")  # stays inside: the same folder, walked once
    (root / "a" / "loop").symlink_to(root)  # a loop: walked once
    summary = ingest(root, tmp_path / "out", "keep_paths=true")
    errors = {e["path"]: e for e in map(json.loads, (tmp_path / "out" / "errors.jsonl").read_text().splitlines())}
    assert summary["videos"] == 1 and set(errors) == {"file_link.dcm", "dir_link"}
    assert all(e["reason"] == "outside_root" and "follow_symlinks=true" in e["detail"] for e in errors.values())
    followed = ingest(root, tmp_path / "out2", "follow_symlinks=true")
    assert followed["videos"] == 3 and followed["errors"] == 1  # file_link and dir_link/secret.dcm: one instance


def test_pydicoms_own_dicomdir_export_is_indexed_not_failed(tmp_path):
    """pydicom's dicomdirtests: a DICOMDIR over 31 CT/MR/CR images in per patient/study/series folders with
    extensionless names, a second media folder with its own DICOMDIR (50 CT headers without pixels and a README),
    variant DICOMDIRs and a README beside them. Every listed file is found through its index, the indexes are no
    errors, and files no index lists (a US loop, the READMEs) are still read."""
    from pydicom.fileset import FileSet

    src = Path(get_testdata_file("DICOMDIR", download=False)).parent
    root = tmp_path / "export"
    shutil.copytree(src, root)
    shutil.copy(_testfile(US_FILES[0]), root / "LOOP")
    with dicom.quiet_pydicom():
        listed = sum(len(FileSet(dcmread(p))) for p in (src / "DICOMDIR", src / "TINY_ALPHA" / "DICOMDIR"))
        variants = sum(1 for p in src.glob("DICOMDIR*") if "DirectoryRecordSequence" in dcmread(p, force=True))
    out = tmp_path / "out"
    summary = ingest(root, out, "salt=s", "keep_paths=true")
    assert listed == 81
    assert summary["dicomdir"] == {"listed": listed, "listed_found": listed, "missing": 0, "outside_root": 0,
                                   "not_listed": 3}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = pd.Series([e["reason"] for e in errors]).value_counts().to_dict()
    assert reasons == {"not_ultrasound": 31, "no_pixel_data": 50, "not_dicom": 2}
    assert summary["index_files"] == variants + 1 and summary["videos"] == 1
    assert summary["files"] == listed + 3 + summary["index_files"]
