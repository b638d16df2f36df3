"""medvid.io.video on videos FFmpeg (libx264 through PyAV) wrote: right frames, exact time mapping, bad files."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from medvid.errors import MedvidError
from medvid.io.video import Video

N_BITS = 12


def stamp(i: int, h: int, w: int) -> np.ndarray:
    """A frame whose top band spells ``i`` in binary (12 blocks) and whose body changes with ``i``."""
    img = np.zeros((h, w, 3), np.uint8)
    bw = w // N_BITS
    for b in range(N_BITS):
        img[: h // 4, b * bw : (b + 1) * bw] = 255 if (i >> b) & 1 else 0
    img[h // 4 :, :, 0] = (i * 7) % 256
    img[h // 4 :, :, 1] = np.arange(w, dtype=np.uint8)[None, :]
    return img


def read_stamp(frames: np.ndarray) -> np.ndarray:
    """Recover the stamped index of each frame (T, H, W, 3)."""
    h, w = frames.shape[1:3]
    bw = w // N_BITS
    cols = [b * bw + bw // 2 for b in range(N_BITS)]
    bits = frames[:, h // 16 : h // 6, cols, :].mean(axis=(1, 3)) > 127
    return (bits * (1 << np.arange(N_BITS))).sum(axis=1)


def write(path, n, rate, size, gop, bframes):
    h, w = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"g": str(gop), "keyint_min": str(gop), "crf": "12", "preset": "veryfast",
                     "bf": "3" if bframes else "0", "sc_threshold": "0"}
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(stamp(i, h, w), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# (name, fps, size (h, w), keyframe interval, B-frames)
CASES = [
    ("f25_g12", 25, (96, 128), 12, True),
    ("f2997_g250", Fraction(30000, 1001), (120, 160), 250, True),
    ("f30_g1", 30, (72, 192), 1, False),
    ("f25_g50_nob", 25, (144, 176), 50, False),
]
N_FRAMES = 310


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for name, rate, size, gop, bf in CASES:
        path = root / f"{name}.mp4"
        write(path, N_FRAMES, rate, size, gop, bf)
        with av.open(str(path)) as c:  # the reference: a plain sequential decode
            ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        out[name] = (path, rate, ref)
    return out


def test_stamps_survive_encoding(videos):
    for path, _, ref in videos.values():
        assert np.array_equal(read_stamp(ref), np.arange(N_FRAMES)), path.name


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_random_access_matches_sequential_decode(videos, case, backend):
    path, rate, ref = videos[case]
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.integers(0, N_FRAMES, 40), [N_FRAMES - 1, 0, 0, 5, 4, 250, 249]])
    with Video(path, backend=backend) as v:
        assert v.backend == backend
        assert v.n_frames == N_FRAMES
        assert v.fps == pytest.approx(float(rate), rel=1e-6)
        assert (v.rows, v.cols) == ref.shape[1:3]
        got = v.frames(idx)
    assert got.dtype == np.uint8 and got.shape == (len(idx),) + ref.shape[1:]
    assert np.array_equal(read_stamp(got), idx)
    assert np.array_equal(got, ref[idx])  # bit-exact against the sequential decode


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("case", ["f25_g12", "f2997_g250"])
def test_time_to_frame_is_exact(videos, case, backend):
    path, rate, _ = videos[case]
    k = np.arange(0, N_FRAMES, 7)
    period = 1 / Fraction(rate)
    starts = np.array([float(i * period) for i in k])  # exact frame start times
    with Video(path, backend=backend) as v:
        assert np.array_equal(read_stamp(v.frames_at(starts)), k)
        assert np.array_equal(read_stamp(v.frames_at(starts + 0.5 * float(period))), k)
        assert np.array_equal(read_stamp(v.frames_at(starts + 0.999 * float(period))), k)
        if case == "f2997_g250":  # 1 s at 29.97 fps is inside frame 29 (frame 30 starts at 1.001 s)
            assert read_stamp(v.frames_at([1.0, 1.001, 10.0]))[:2].tolist() == [29, 30]
            assert v.duration == pytest.approx(N_FRAMES * 1001 / 30000)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_iter_batches_streams_1fps(videos, backend):
    path, rate, ref = videos["f2997_g250"]
    with Video(path, backend=backend) as v:
        it = v.iter_batches(fps=1.0, batch_size=4)
        assert iter(it) is it  # a lazy generator
        batches = list(it)
    times = np.concatenate([t for t, _ in batches])
    frames = np.concatenate([f for _, f in batches])
    assert [len(t) for t, _ in batches] == [4, 4, 3]  # 310 frames at 29.97 fps = 10.34 s -> 0..10 s
    assert np.allclose(times, np.arange(11))
    expect = np.floor(np.arange(11) * 30000 / 1001 + 1e-6).astype(int)
    assert np.array_equal(read_stamp(frames), expect)
    assert np.array_equal(frames, ref[expect])


@pytest.mark.parametrize("case", ["f25_g12", "f2997_g250"])
def test_pyav_reads_frames_announced_late(videos, case):
    """One frame per call: B-frames skipped as unneeded before they were asked for are decoded again."""
    path, _, ref = videos[case]
    with Video(path, backend="pyav") as v:
        got = np.concatenate([v.frames([i]) for i in range(0, 120, 3)])
    assert np.array_equal(got, ref[0:120:3])


def test_clip_spreads_frames_evenly(videos):
    path, _, _ = videos["f25_g12"]
    with Video(path) as v:
        clip = v.clip(2.0, 4.0, 4)  # bin centres 2.25, 2.75, 3.25, 3.75 s
    assert read_stamp(clip).tolist() == [56, 68, 81, 93]


def test_pyav_fallback_when_decord_cannot_open(videos, monkeypatch):
    import decord

    def refuse(*a, **k):
        raise RuntimeError("decord cannot open this file")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    path, _, ref = videos["f25_g50_nob"]
    with Video(path) as v:
        assert v.backend == "pyav"
        assert np.array_equal(v.frames([3, 200]), ref[[3, 200]])


def test_container_without_frame_count(tmp_path):
    """Matroska stores no frame count: it is counted from the packets, and frames are still exact."""
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.options = {"crf": "12", "g": "30"}
        for i in range(90):
            for p in s.encode(av.VideoFrame.from_ndarray(stamp(i, 96, 128), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0
    for backend in ("pyav", "auto"):
        with Video(path, backend=backend) as v:
            assert v.n_frames == 90 and v.duration == pytest.approx(3.6)
            assert read_stamp(v.frames_at([0.0, 1.0, 3.55])).tolist() == [0, 25, 88]
            assert [read_stamp(f).tolist() for _, f in v.iter_batches(fps=1.0, batch_size=2)] == [[0, 25], [50, 75]]


def test_out_of_range_index(videos):
    path, _, _ = videos["f25_g12"]
    with Video(path) as v, pytest.raises(IndexError):
        v.frames([N_FRAMES])


# ---- bad input -----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(MedvidError, match="no such video"):
        Video(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(MedvidError, match="empty.mp4.*0 bytes"):
        Video(p)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_mp4(videos, tmp_path, how):
    data = videos["f25_g12"][0].read_bytes()
    p = tmp_path / f"{how}.mp4"
    p.write_bytes(data[: len(data) // 2] if how == "truncated" else np.random.default_rng(0).bytes(20000))
    with pytest.raises(MedvidError, match=f"{how}.mp4: cannot decode video"):
        Video(p)


def test_damaged_data_mid_file_is_skipped_not_fatal(videos, tmp_path, caplog):
    """Garbage over part of the stream: PyAV skips the damaged packets (as ffmpeg does) and warns;
    frames away from the damage are still exact; decord alone stops with a clear error."""
    path, _, ref = videos["f25_g12"]
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    for backend in ("auto", "pyav"):
        with Video(bad, backend=backend) as v:
            frames = np.concatenate([f for _, f in v.iter_batches(fps=5.0, batch_size=8)])
            some = v.frames([0, 1, N_FRAMES - 1])
        assert len(frames) == 62  # every requested time answered
        assert np.array_equal(frames[:3], ref[[0, 5, 10]]) and np.array_equal(some, ref[[0, 1, N_FRAMES - 1]])
    assert "damaged data near" in caplog.text
    with pytest.raises(MedvidError, match="damaged.mp4: decoding failed"), Video(bad, backend="decord") as v:
        v.frames(np.arange(N_FRAMES))


def test_video_without_video_stream(tmp_path):
    p = tmp_path / "audio_only.mp4"
    with av.open(str(p), "w") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for pkt in list(a.encode(fr)) + list(a.encode()):
            c.mux(pkt)
    with pytest.raises(MedvidError, match="audio_only.mp4: cannot decode video"):
        Video(p)


def test_video_and_dicom_cine_share_one_reader_protocol(videos):
    """``Video`` and ``DicomCine`` answer the same ``VideoReader`` surface: frames by index (any order,
    repeats, a fresh writable array), frame count, rate, timestamps, size, close as a context manager."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from medvid.io.dicom import DicomCine
    from medvid.io.reader import VideoReader

    path, rate, ref = videos["f25_g12"]
    dicom = Path(get_testdata_file("color3d_jpeg_baseline.dcm", download=False))
    for reader in (Video(path), DicomCine(dicom)):
        with reader as r:
            assert isinstance(r, VideoReader)
            got = r.frames([2, 0, 2])
            assert got.shape == (3, r.rows, r.cols, 3) and got.dtype == np.uint8 and got.flags.writeable
            assert np.array_equal(got[0], got[2]) and len(r.timestamps) == r.n_frames and r.fps > 0
    with Video(path) as v:
        assert np.array_equal(v.frames(), ref) and (v.rows, v.cols) == ref.shape[1:3]


def test_a_video_loop_opens_its_file_once(videos, monkeypatch):
    """``open_loop`` on a video file: one decoder session serves every ``frames`` call (no reopening per clip)."""
    from medvid.io import video as video_module
    from medvid.io.echo_videos import open_loop

    path, _, ref = videos["f25_g12"]
    opened = []
    for cls in (video_module._DecordReader, video_module._PyAVReader):
        real = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _real=real, **k: opened.append(1) or _real(self, *a, **k))
    with open_loop(path) as loop:
        assert isinstance(loop, Video)
        for i in range(0, 40, 8):
            assert np.array_equal(loop.frames([i, i + 1]), ref[[i, i + 1]])
    assert len(opened) <= 2  # the metadata/streaming decoder and, lazily, the random-access one
