"""Echo video folders in the EchoNet-Dynamic layout: table parsing, ingest with per-file mismatches,
the round trip into EchoVideoDataset, and `synth echo layout=echonet`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvid.config import load_config
from medvid.datasets.echo import EchoVideoDataset
from medvid.transforms.contract import Sampling
from medvid.errors import MedvidError
from medvid.io.ingest_folder import KEY_DIR
from medvid.io.echo_videos import disk_volume, open_loop, read_filelist, read_volume_tracings
from medvid.io.video import write_video
from medvid.synth.echonet import write_avi
from medvid.utils import read_jsonl
from medvid.pipelines import ingest, synth_echo

# As published: FileName without .avi in FileList (some copies add it), with .avi in VolumeTracings.
FILELIST = """FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
0X1A2B3C4D5E6F7081,64.2,35.1,98.0,112,112,50,40,TRAIN
0X1A2B3C4D5E6F7082.avi,31.5,120.4,175.7,112,112,50,36,VAL
0X1A2B3C4D5E6F7083,55.0,40.0,88.9,112,112,50,30,TEST
0X1A2B3C4D5E6F7084,48.0,50.0,96.2,112,112,50,40,TRAIN
"""
TRACINGS = """FileName,X1,Y1,X2,Y2,Frame
0X1A2B3C4D5E6F7081.avi,50,20,52,80,30
0X1A2B3C4D5E6F7081.avi,40,40,62,40,30
0X1A2B3C4D5E6F7081.avi,38,60,64,60,30
0X1A2B3C4D5E6F7081.avi,50,20,52,90,12
0X1A2B3C4D5E6F7081.avi,32,40,70,40,12
0X1A2B3C4D5E6F7081.avi,30,60,72,60,12
0X1A2B3C4D5E6F7082.avi,50,20,52,80,5
0X1A2B3C4D5E6F7082.avi,40,40,62,40,5
"""


def _frames(n: int, seed: int) -> np.ndarray:
    """A beating grey disc inside a fan-like box on black, 112×112."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:112, :112]
    out = np.zeros((n, 112, 112, 3), np.uint8)
    for t in range(n):
        r = 20 + 8 * np.sin(2 * np.pi * t / 20)
        img = rng.integers(60, 140, (112, 112)).astype(np.uint8)
        img[(xx - 56) ** 2 + (yy - 60) ** 2 < r ** 2] = 10
        img[:, :16] = img[:, 96:] = 0
        out[t] = img[..., None]
    return out


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("echonet")
    (root / "FileList.csv").write_text(FILELIST)
    (root / "VolumeTracings.csv").write_text(TRACINGS)
    write_avi(root / "Videos" / "0X1A2B3C4D5E6F7081.avi", _frames(40, 1), 50)
    write_avi(root / "Videos" / "0X1A2B3C4D5E6F7082.avi", _frames(36, 2), 50)
    write_video(root / "Videos" / "0X1A2B3C4D5E6F7084.mp4", _frames(38, 4), fps=50)  # H.264; table says 40 frames
    write_avi(root / "Videos" / "0X1A2B3C4D5E6F7099.avi", _frames(20, 9), 50)  # no FileList row
    return root  # ...7083 is listed but has no file


def test_filelist_both_filename_spellings_and_lowercase_splits(layout):
    df = read_filelist(layout / "FileList.csv")
    assert df["name"].tolist() == [f"0X1A2B3C4D5E6F708{i}" for i in (1, 2, 3, 4)]
    assert df["split"].tolist() == ["train", "val", "test", "train"]
    assert df["ef"].tolist() == [64.2, 31.5, 55.0, 48.0] and df["n_frames"].iloc[1] == 36


def test_filelist_errors_name_file_and_reason(tmp_path):
    bad = tmp_path / "FileList.csv"
    bad.write_text("FileName,EF,Split\nA,60,TRAIN\nB,sixty,TEST\n")
    with pytest.raises(MedvidError, match=r"FileList.csv: column 'EF' has non-numeric value\(s\) on data row\(s\) "
                                          r"\[2\]"):
        read_filelist(bad)
    bad.write_text("FileName,EF,Split\nA,60,TRAIN\nA.avi,50,TEST\n")
    with pytest.raises(MedvidError, match="listed twice"):
        read_filelist(bad)
    bad.write_text("FileName,EF,Split\nA,60,HOLDOUT\n")
    with pytest.raises(MedvidError, match="Split must be"):
        read_filelist(bad)
    bad.write_text("Name,EF\nA,60\n")
    with pytest.raises(MedvidError, match=r"missing column\(s\) \['FileName'\]"):
        read_filelist(bad)


def test_volume_tracings_end_diastole_is_the_larger_volume(layout):
    tracings, problems = read_volume_tracings(layout / "VolumeTracings.csv")
    t = tracings["0X1A2B3C4D5E6F7081"]
    assert (t.ed_frame, t.es_frame) == (12, 30) and t.ed_volume_px > t.es_volume_px
    assert "0X1A2B3C4D5E6F7082" in problems and "1 traced frame" in problems["0X1A2B3C4D5E6F7082"]
    # method of disks: chords 22 and 26 px, long axis ≈ 60 px, two disks
    lines = np.array([[50, 20, 52, 80], [40, 40, 62, 40], [38, 60, 64, 60]], float)
    assert disk_volume(lines) == pytest.approx(np.pi / 4 * (22 ** 2 + 26 ** 2) * np.hypot(2, 60) / 2)


@pytest.fixture(scope="module")
def ingested(layout, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ingest")
    cfg = load_config(ingest.Config, "ingest", None, [f"dicom_root={layout}", f"out={out}", "progress=false",
                                                      "salt=test-salt"])
    return out, ingest.run(cfg)


def test_ingest_reports_each_mismatch_with_numbers(ingested):
    out, summary = ingested
    assert summary["layout"] == "echonet" and summary["videos"] == 3 and summary["files"] == 4
    errors = read_jsonl(out / "errors.jsonl")
    by_reason = {e["reason"]: e for e in errors}
    assert set(by_reason) == {"missing_video", "table_mismatch", "not_in_filelist", "tracing"}
    assert by_reason["table_mismatch"]["detail"] == "FileList NumberOfFrames 40, file has 38 frames"
    assert by_reason["table_mismatch"]["kept"] is True and by_reason["missing_video"]["kept"] is False
    assert "1 traced frame" in by_reason["tracing"]["detail"]
    text = (out / "errors.jsonl").read_text() + (out / "labels.csv").read_text()
    text += pd.read_parquet(out / "videos.parquet").to_csv()
    assert "0X1A2B3C4D5E6F708" not in text  # names stay in the key folder only
    assert "0X1A2B3C4D5E6F7083" in (out / KEY_DIR / "paths.jsonl").read_text()


def test_ingest_contract_and_round_trip_into_echo_dataset(layout, ingested):
    out, _ = ingested
    videos = pd.read_parquet(out / "videos.parquet")
    assert list(videos.columns[:10]) == ["study_key", "video_key", "instance_key", "series_key", "patient_key",
                                         "file_key", "view", "split", "frames", "fps"]
    assert sorted(videos["split"]) == ["train", "train", "val"] and (videos["fps"] == 50).all()
    assert sorted(videos["frames"]) == [36, 38, 40] and (videos["rows"] == 112).all()
    traced = videos.dropna(subset=["ed_frame"])
    assert len(traced) == 1 and (traced["ed_frame"].iloc[0], traced["es_frame"].iloc[0]) == (12, 30)
    box = videos["sector_box"].iloc[0]
    assert videos["sector_source"].eq("pixels").all() and 14 <= box[0] <= 18 and 94 <= box[2] <= 98
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["study_key", "ef", "esv", "edv"] and len(labels) == 4
    assert set(videos["study_key"]) <= set(labels["study_key"])
    ds = EchoVideoDataset(out, layout, Sampling(32, frame_stride=2), preprocess="echoprime", split="train")
    assert len(ds) == 2
    for item in ds:
        assert item["video"].shape == (3, 32, 224, 224) and item["video"].dtype.is_floating_point
    raw = EchoVideoDataset(out, layout, Sampling(4, mask="box"), preprocess=None)
    clip = raw[0]["video"]
    assert clip.shape == (3, 4, 112, 112) and clip[:, :, :, :box[0]].abs().sum() == 0


def test_video_loop_matches_dicomcine_surface(layout):
    loop = open_loop(layout / "Videos" / "0X1A2B3C4D5E6F7081.avi")
    assert (loop.n_frames, loop.rows, loop.cols, loop.fps) == (40, 112, 112, 50.0)
    assert loop.timestamps[1] == pytest.approx(0.02)
    frames = loop.frames([3, 1, 3])
    assert frames.shape == (3, 112, 112, 3) and frames.flags.writeable and np.array_equal(frames[0], frames[2])


def test_synth_echonet_layout_ingests_with_ef_truth_and_tracings(tmp_path):
    summary = synth_echo.run(load_config(synth_echo.Config, "synth_echo", None, [
        f"out={tmp_path / 'data'}", "studies=4", "layout=echonet", "frames_min=30", "frames_max=36",
        "fps_choices=[50.0]", "progress=false"]))
    assert summary["layout"] == "echonet" and summary["videos"] == 4
    filelist = read_filelist(tmp_path / "data" / "FileList.csv")
    assert (filelist[["frame_height", "frame_width"]] == 112).all().all()
    tracings, problems = read_volume_tracings(tmp_path / "data" / "VolumeTracings.csv")
    assert not problems and len(tracings) == 4
    for row in filelist.itertuples():  # traced volumes follow the rendered EF: ESV/EDV = 1 − EF
        t = tracings[row.name]
        assert 1 - t.es_volume_px / t.ed_volume_px == pytest.approx(row.ef / 100, abs=0.08)
    result = ingest.run(load_config(ingest.Config, "ingest", None, [
        f"dicom_root={tmp_path / 'data'}", f"out={tmp_path / 'ing'}", "progress=false"]))
    assert result["videos"] == 4 and result["errors"] == 0 and result["traced"] == 4
    assert json.loads(json.dumps(result))["labels_matched"] == 4
    with pytest.raises(MedvidError, match="layout must be one of"):
        synth_echo.run(load_config(synth_echo.Config, "synth_echo", None, [f"out={tmp_path}", "layout=avi"]))


def test_video_folder_reports_are_scrubbed_before_they_are_written(layout, tmp_path):
    reports = tmp_path / "reports.csv"
    reports.write_text("study_uid,report\n0X1A2B3C4D5E6F7081,\"Patient: Jane Doe  MRN: 4455667  DOB 03/14/1941\n"
                       "Left Ventricle: LVEF 55%.\nElectronically signed by Dr. Alan Smithee on 06/16/2019\"\n")
    out = tmp_path / "ingest"
    summary = ingest.run(load_config(ingest.Config, "ingest", None, [
        f"dicom_root={layout}", f"out={out}", f"reports={reports}", "progress=false", "salt=test-salt"]))
    text = (out / "reports.csv").read_text()
    assert "LVEF 55%" in text and summary["reports_scrubbed"]["NAME"] >= 2
    for phi in ("Jane", "Doe", "4455667", "03/14/1941", "Smithee", "06/16/2019"):
        assert phi not in text


def test_undecodable_video_is_reported_without_its_name(tmp_path):
    root = tmp_path / "data"
    (root / "Videos").mkdir(parents=True)
    (root / "FileList.csv").write_text("FileName,EF,Split\n0XGOOD00000000001,60,TRAIN\n0XBROKEN000000002,40,TEST\n")
    write_avi(root / "Videos" / "0XGOOD00000000001.avi", _frames(12, 3), 50)
    (root / "Videos" / "0XBROKEN000000002.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video" * 20)
    summary = ingest.run(load_config(ingest.Config, "ingest", None, [
        f"dicom_root={root}", f"out={tmp_path / 'out'}", "progress=false"]))
    assert summary["videos"] == 1 and summary["errors_by_reason"] == {"decode_error": 1}
    assert "0XBROKEN" not in (tmp_path / "out" / "errors.jsonl").read_text()
