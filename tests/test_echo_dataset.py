"""Clip transforms, the sampling contract and the echo loop dataset (lazy decoding, time-based sampling)."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import medvid.io.dicom as dicom
from echo_testdata import ingest, ingest_synth, make_synth
from medvid.datasets.echo import EchoVideoDataset, clip_indices
from medvid.transforms.clip import PRESETS, ClipPreprocess, resolve_preprocess, to_clip_tensor
from medvid.transforms.contract import Sampling
from medvid.io.timing import frame_timestamps


def test_to_clip_tensor_layout_and_scale():
    frames = np.random.default_rng(0).integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)
    clip = to_clip_tensor(frames)
    assert clip.shape == (3, 4, 10, 12) and clip.dtype == torch.float32
    assert clip[1, 2, 3, 4].item() == frames[2, 3, 4, 1]
    with pytest.raises(ValueError):
        to_clip_tensor(frames[..., 0])


def test_echoprime_preset_crop_zoom_and_normalisation():
    pre = ClipPreprocess.from_preset("echoprime")
    assert Sampling.of_preset("echoprime") == Sampling(num_frames=16, fps=None, frame_stride=2)
    assert pre.crop_box(480, 640) == (384, 384)  # centre 480² square, 10 % off each side
    clip = torch.empty(3, 2, 48, 64)
    for c, v in enumerate((29.110628, 100.0, 0.0)):
        clip[c] = v
    out = pre(clip)
    assert type(out) is torch.Tensor and out.shape == (3, 2, 224, 224)
    assert torch.allclose(out[0], torch.zeros(()), atol=1e-5)
    assert torch.allclose(out[1], torch.tensor((100 - 28.076836) / 46.456997), atol=1e-4)
    assert torch.allclose(out[2], torch.tensor(-29.096405 / 47.20083), atol=1e-4)


def test_center_square_keeps_the_middle():
    clip = torch.zeros(3, 1, 40, 80)
    clip[:, :, :, 20:60] = 255.0  # the central 40x40 square is white, the sides black
    out = ClipPreprocess(size=16, crop="center_square", mean=(0, 0, 0), std=(1, 1, 1))(clip)
    assert out.min() > 250  # nothing of the black sides got in
    out = ClipPreprocess(size=16, crop="none", mean=(0, 0, 0), std=(1, 1, 1))(clip)
    assert out.min() < 5


def test_from_frames_matches_the_tensor_path():
    """The decode-side fast path (NumPy crop + Pillow resize) agrees with the MONAI tensor path."""
    from pydicom.data import get_testdata_file

    from medvid.io.dicom import DicomCine

    frames = DicomCine(get_testdata_file("examples_ybr_color.dcm", download=False)).frames(range(0, 8))
    pre = ClipPreprocess.from_preset("echoprime", size=112)
    for f in (frames, frames[:, ::3, ::3].copy()):  # shrinking (box/area) and enlarging (bilinear)
        fast, ref = pre.from_frames(f), pre(to_clip_tensor(f))
        assert fast.shape == ref.shape and (fast - ref).abs().mean() < 0.03
    with pytest.raises(ValueError):
        pre.from_frames(frames.astype(np.float32))


def test_imagenet_presets_match_timm():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN

    assert np.allclose(PRESETS["imagenet"]["mean"], np.array(IMAGENET_DEFAULT_MEAN) * 255)
    assert np.allclose(PRESETS["imagenet"]["std"], np.array(IMAGENET_DEFAULT_STD) * 255)
    assert np.allclose(PRESETS["imagenet_inception"]["mean"], np.array(IMAGENET_INCEPTION_MEAN) * 255)
    assert isinstance(resolve_preprocess("imagenet"), ClipPreprocess)
    with pytest.raises(ValueError):
        resolve_preprocess("nope")


def test_normalisation_equals_monai_normalize_intensity():
    from monai.transforms import NormalizeIntensity

    pre = ClipPreprocess(size=32, crop="none", mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    clip = torch.rand(3, 4, 32, 32) * 255
    ref = NormalizeIntensity(subtrahend=pre.mean, divisor=pre.std, channel_wise=True)(clip.clone())  # works in place
    assert torch.allclose(pre(clip), torch.as_tensor(ref), atol=1e-5)


# ------------------------------------------------------------------------------------------ datasets
@pytest.fixture(scope="module")
def echo_data(tmp_path_factory) -> tuple[Path, Path]:
    synth = tmp_path_factory.mktemp("synth")
    make_synth(synth)
    out = tmp_path_factory.mktemp("ingest")
    ingest_synth(synth, out)
    return out, synth / "dicom"


def _fake_cine(n_frames: int, fps: float | None):
    ts = frame_timestamps(n_frames, fps=fps) if fps else None
    return SimpleNamespace(n_frames=n_frames, fps=fps, timestamps=ts)


def test_clip_sampling_is_by_time():
    at30 = clip_indices(_fake_cine(90, 30.0), 8, fps=15.0)
    at60 = clip_indices(_fake_cine(180, 60.0), 8, fps=15.0)
    assert list(at30) == list(range(0, 16, 2)) and list(at60) == list(range(0, 32, 4))  # same 0.53 s of heart
    assert list(clip_indices(_fake_cine(120, 30.0), 16, frame_stride=2)) == list(range(0, 32, 2))  # EchoPrime
    assert list(clip_indices(_fake_cine(10, 30.0), 8, frame_stride=2)) == [0, 2, 4, 6, 8, 0, 2, 4]  # loops wrap
    assert list(clip_indices(_fake_cine(20, None), 4, fps=10.0, default_fps=20.0)) == [0, 2, 4, 6]
    mid = clip_indices(_fake_cine(100, 30.0), 10, frame_stride=1, start="center")
    assert list(mid) == list(range(45, 55))
    rng = np.random.default_rng(0)
    starts = {int(clip_indices(_fake_cine(100, 30.0), 10, frame_stride=1, start="random", rng=rng)[0]) for _ in range(20)}
    assert len(starts) > 5 and max(starts) <= 90


def test_video_items(echo_data):
    out, root = echo_data
    ds = EchoVideoDataset(out, root)  # EchoPrime preset by default
    videos = pd.read_parquet(out / "videos.parquet")
    assert len(ds) == len(videos)
    item = ds[0]
    assert item["video"].shape == (3, 16, 224, 224) and item["video"].dtype == torch.float32
    assert item["video_key"] == videos["video_key"][0] and item["view"] in set(videos["view"])
    raw = EchoVideoDataset(out, root, Sampling(8, fps=20.0), preprocess=None)[0]["video"]
    assert raw.shape == (3, 8, 96, 128) and raw.max() <= 255 and raw.min() >= 0
    a4c = EchoVideoDataset(out, root, views=["A4C"], split="train")
    assert len(a4c) > 0 and set(a4c.videos["view"]) == {"A4C"} and set(a4c.videos["split"]) == {"train"}


def test_only_the_clip_frames_are_decoded(echo_data, monkeypatch):
    out, root = echo_data
    asked = []
    real = dicom.DicomCine.frames
    monkeypatch.setattr(dicom.DicomCine, "frames", lambda self, idx=None: asked.append(
        (self.n_frames, None if idx is None else len(np.unique(idx)))) or real(self, idx))
    ds = EchoVideoDataset(out, root, Sampling(6, fps=10.0))
    for i in range(len(ds)):
        ds[i]
    # Each clip's frames, plus (once per loop, unless stored already) the 16 reference frames of its fan mask.
    assert len(ds) <= len(asked) <= 2 * len(ds)
    assert all(n_unique is not None and n_unique <= 16 for _, n_unique in asked)
    asked.clear()
    for i in range(len(ds)):  # the fans are stored now: only the clip frames are decoded
        ds[i]
    assert len(asked) == len(ds)
    assert all(n_unique is not None and n_unique <= 6 < n_frames for n_frames, n_unique in asked)


def test_sector_mask_blanks_text_and_ecg(echo_data):
    out, root = echo_data
    for i, row in pd.read_parquet(out / "videos.parquet").iterrows():
        x0, y0, x1, y1 = row["sector_box"]
        masked = EchoVideoDataset(out, root, Sampling(mask="box"), preprocess=None)[i]["video"]
        assert masked[:, :, :y0].abs().sum() == 0 and masked[:, :, y1:].abs().sum() == 0
        assert masked[:, :, :, :x0].abs().sum() == 0 and masked[:, :, :, x1:].abs().sum() == 0
        unmasked = EchoVideoDataset(out, root, Sampling(mask="none"), preprocess=None)[i]["video"]
        assert unmasked[:, :, :y0].sum() > 0  # burned-in text lives there
        by_pixels = EchoVideoDataset(out, root, Sampling(mask="pixels"), preprocess=None)[i]["video"]
        assert by_pixels[:, :, :y0].abs().sum() == 0 and by_pixels[:, :, y1 + 2:].abs().sum() == 0
        break


def test_echoprime_clip_of_a_real_cine_matches_a_direct_computation(tmp_path):
    """pydicom's color3d_jpeg_baseline.dcm through ingest + dataset equals frames 0,2,..,30 decoded by
    pydicom, masked to the regions box, centre-cropped with 10 % zoom, resized, normalised."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels import iter_pixels

    src = Path(get_testdata_file("color3d_jpeg_baseline.dcm", download=False))
    (tmp_path / "root").mkdir()
    shutil.copy(src, tmp_path / "root" / "loop.dcm")  # a copy: symlinks out of the data root are refused
    ingest(tmp_path / "root", tmp_path / "out")
    ours = EchoVideoDataset(tmp_path / "out", tmp_path / "root", Sampling(frame_stride=2, mask="box"))[0]["video"]
    frames = np.stack(list(iter_pixels(src, indices=range(0, 32, 2))))  # pydicom's own decode + YBR→RGB
    keep = np.zeros(frames.shape[1:3], bool)
    keep[31:415, 84:596] = True
    frames[:, ~keep] = 0
    ref = ClipPreprocess.from_preset("echoprime")(to_clip_tensor(frames))
    assert ours.shape == ref.shape == (3, 16, 224, 224)
    assert (ours - ref).abs().mean() < 0.02  # JPEG decoder rounding only (normalised units)


def test_clip_indices_without_wrap_mark_positions_past_the_loop():
    assert list(clip_indices(_fake_cine(10, 30.0), 8, frame_stride=2, wrap=False)) == [0, 2, 4, 6, 8, -1, -1, -1]
    assert list(clip_indices(_fake_cine(20, 30.0), 8, frame_stride=2, wrap=False)) == list(range(0, 16, 2))


def test_a_saved_model_is_fed_its_recorded_contract(echo_data, tmp_path):
    """A classifier trained on 8 frames every 3rd native frame with the box mask (recorded by the training
    job over its YAML's 16) is fed exactly that after a save/load, at its size and normalisation; a
    setting given by the job wins."""
    from medvid.models.checkpoint import load_pretrained, record_training_input
    from medvid.models.factory import create_view_classifier

    out, root = echo_data
    clf = create_view_classifier({"pretrained": False, "input_size": 48, "num_frames": 16})
    record_training_input(clf, Sampling(8, None, 3, "box"))
    back = load_pretrained(clf.save_pretrained(tmp_path / "views"))
    ds = EchoVideoDataset.for_model(out, root, back)
    assert ds.sampling == Sampling(num_frames=8, fps=None, frame_stride=3, mask="box", short_clip="wrap")
    assert ds[0]["video"].shape == (3, 8, 48, 48)
    assert ds.preprocess.mean == back.pretrained_cfg.mean and ds.preprocess.size == 48
    job = EchoVideoDataset.for_model(out, root, back, Sampling.recorded(back.pretrained_cfg, 4, fps=10.0))
    assert job[0]["video"].shape == (3, 4, 48, 48) and (job.sampling.frame_stride, job.sampling.fps) == (None, 10.0)
    assert job.sampling.mask == "box"  # what the job does not set stays as recorded
    assert Sampling.recorded(None) == Sampling(16, None, 2, "fan", "wrap", "none")  # nothing recorded: EchoPrime's


def test_a_model_recorded_with_a_motion_image_gets_it_as_its_last_frame(echo_data, tmp_path):
    """``motion: std`` recorded at training: every clip gains one last frame, each pixel's standard deviation
    over the real frames (zero padding of a short loop excluded), bright where the walls move."""
    from medvid.models.checkpoint import load_pretrained, record_training_input
    from medvid.models.factory import create_view_classifier

    out, root = echo_data
    clf = create_view_classifier({"pretrained": False, "input_size": 48})
    record_training_input(clf, Sampling(40, None, 1, "box", motion="std"))
    back = load_pretrained(clf.save_pretrained(tmp_path / "m"))
    c = back.pretrained_cfg
    plain = EchoVideoDataset.for_model(out, root, back, Sampling.recorded(c, short_clip="zero_pad_after_norm",
                                                                         motion="none"))[0]["video"]
    ds = EchoVideoDataset.for_model(out, root, back, Sampling.recorded(c, short_clip="zero_pad_after_norm"))
    clip, n = ds[0]["video"], int(ds.videos["frames"].iloc[0])
    assert ds.sampling.motion == "std" and ds.sampling.clip_frames == 41 and clip.shape == (3, 41, 48, 48) and n < 40
    assert torch.equal(clip[:, :40], plain) and not plain[:, n:].any()  # the loop is shorter than 40: zeros
    assert torch.allclose(clip[:, 40], plain[:, :n].std(1, correction=0), atol=1e-6)
    assert clip[:, 40].amax() > 10 * clip[:, 40].median()  # motion is where the walls are, not everywhere
    with pytest.raises(ValueError, match="motion"):
        Sampling.recorded(c, motion="flow")


def test_echoprime_contract_zero_pads_short_loops_after_normalisation(echo_data):
    """An imported EchoPrime's recorded contract (bicubic crop, zero padding after normalisation) fed through
    the dataset equals the reference clip of the same decoded frames (loops of 16-24 frames < 32)."""
    from medvid.io.echo_videos import open_loop
    from medvid.io.ingest_folder import IngestFolder
    from medvid.models import importers as imp

    out, root = echo_data
    model = imp._Imported({}, imp.ECHOPRIME_PRETRAINED_CFG)
    ds = EchoVideoDataset.for_model(out, root, model, Sampling.recorded(model.pretrained_cfg, mask="none"))
    assert ds.sampling.short_clip == "zero_pad_after_norm" and isinstance(ds.preprocess, imp.EchoPrimePreprocess)
    row = ds.videos.iloc[0]
    cine = open_loop(root / IngestFolder(out).video_paths()[row["video_key"]])
    assert cine.n_frames < 32
    got = ds[0]["video"]
    want = imp.echoprime_clip(cine.frames(np.arange(min(cine.n_frames, 32))))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    valid = (cine.n_frames + 1) // 2
    assert torch.count_nonzero(got[:, valid:]) == 0 and torch.count_nonzero(got[:, valid - 1]) > 0


# ------------------------------------------------------------------------------------------ fan masks
@pytest.fixture()
def fresh_ingest(echo_data, tmp_path) -> tuple[Path, Path]:
    """The ingest of ``echo_data`` as an ingest folder without stored fans (as written before issue 29)."""
    out, root = echo_data
    shutil.copytree(out, tmp_path / "out", ignore=shutil.ignore_patterns("sectors.jsonl"))
    return tmp_path / "out", root


def _count_fans(monkeypatch) -> list[int]:
    import medvid.datasets.echo as echo

    calls = []
    real = echo.fan_mask
    monkeypatch.setattr(echo, "fan_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_loops_fan_is_estimated_once_per_ingest_not_per_read(fresh_ingest, monkeypatch):
    """One pass over a dataset estimates each loop's fan at most once (whatever the clip sampled); a second
    epoch, and another dataset (another job or process) over the same ingest, estimate none."""
    out, root = fresh_ingest
    calls = _count_fans(monkeypatch)
    ds = EchoVideoDataset(out, root, Sampling(6, fps=10.0), preprocess=None, start="random", seed=0)
    for _ in range(2):  # two reads per loop in the first epoch
        for i in range(len(ds)):
            ds[i]
    assert len(calls) == len(ds)
    for i in range(len(ds)):  # second epoch
        ds[i]
    other = EchoVideoDataset(out, root, preprocess="echoprime")
    for i in range(len(other)):
        other[i]
    assert len(calls) == len(ds)
    assert (out / "sectors.jsonl").stat().st_size < 4096 * len(ds)  # compact: a packed bitmask per loop


def test_stored_fans_equal_the_masks_estimated_on_every_read(fresh_ingest):
    """EchoPrime's clip (the default sampling of banks, drafts and probes) is masked exactly as when its fan
    was estimated from the clip on every read; a clip of other frames gets the loop's reference fan."""
    import json

    from medvid.datasets.echo import load_clip
    from medvid.io.echo_videos import open_loop
    from medvid.io.regions import fan_mask

    out, root = fresh_ingest
    ds = EchoVideoDataset(out, root, Sampling(16, frame_stride=2), preprocess=None)  # EchoPrime's frames
    again = EchoVideoDataset(out, root, Sampling(16, frame_stride=2), preprocess=None)  # reads the stored fans
    paths = ds._paths
    for i, row in ds.videos.iterrows():
        regions = json.loads(row["regions"]) if isinstance(row.get("regions"), str) else None
        box = None if row["sector_box"] is None else list(row["sector_box"])
        with open_loop(root / paths[row["video_key"]]) as cine:
            idx = clip_indices(cine, 16, frame_stride=2)
            today = load_clip(cine, idx, "fan", box, None, regions)  # estimated from the clip itself
            keep, _ = fan_mask(cine.frames(idx), regions, box)
        assert torch.equal(ds[i]["video"], today) and torch.equal(again[i]["video"], today)
        stored, _ = again.sectors.get(row["video_key"], *today.shape[2:])
        assert np.array_equal(stored, keep)


def test_sector_store_round_trips_and_ignores_what_it_did_not_write(tmp_path):
    from medvid.io.sectors import SECTORS, SectorStore, pack_mask, unpack_mask

    mask = np.zeros((48, 61), bool)
    mask[5:40, 7:50] = True
    assert np.array_equal(unpack_mask(pack_mask(mask), 48, 61), mask)
    with pytest.raises(ValueError):
        unpack_mask(pack_mask(mask), 48, 60)  # another size
    (tmp_path / SECTORS).write_text('not json\n{"v": 1, "video_key": "v_b", "rows": 48, "cols": 61, '
                                    '"source": "pixels", "mask": "AAAA"}\n' + "x" * 3_000_000 + "\n")
    store = SectorStore(tmp_path)
    store.put("v_a", mask, "regions", 48, 61)
    store.put("v_none", None, "none", 48, 61)
    back = SectorStore(tmp_path)
    got, source = back.get("v_a", 48, 61)
    assert np.array_equal(got, mask) and source == "regions"
    assert back.get("v_none", 48, 61) == (None, "none")
    assert back.get("v_a", 48, 62) is None  # stored for another size: estimate again
    assert back.get("v_b", 48, 61) is None  # a line that is not a packed mask
    with open(tmp_path / SECTORS, "a") as f:
        f.write('{"v": 1, "video_key": "v_c"')  # a line still being written
    assert back.get("v_c", 48, 61) is None


def test_blank_outside_mask_equals_boolean_indexing():
    from medvid.io.regions import blank_outside_mask, convex_hull_mask

    rng = np.random.default_rng(0)
    frames = rng.integers(1, 256, (3, 40, 50, 3), dtype=np.uint8)
    fan = np.zeros((40, 50), bool)
    fan[10:35, 5:45] = True
    fan[2:6, 20:30] = True
    for keep in (convex_hull_mask(fan), fan, rng.random((40, 50)) > 0.5, np.ones((40, 50), bool)):
        ref = frames.copy()
        ref[:, ~keep] = 0
        assert np.array_equal(blank_outside_mask(frames.copy(), keep), ref)


def test_sector_store_of_a_folder_it_cannot_write_keeps_fans_in_memory(tmp_path):
    from medvid.io.sectors import SectorStore

    store = SectorStore(tmp_path / "not_there")  # cannot be written (as a read-only share cannot)
    mask = np.eye(8, dtype=bool)
    store.put("v_a", mask, "pixels", 8, 8)
    store.put("v_b", mask, "pixels", 8, 8)
    assert np.array_equal(store.get("v_a", 8, 8)[0], mask) and store.get("v_b", 8, 8) is not None
    assert not (tmp_path / "not_there").exists()
