"""medvid.io.render: DICOM cine loops → sector-masked H.264 MP4 (synthetic loops with burned-in
text, and a real ultrasound file from pydicom's test data)."""
from __future__ import annotations

import io
import os

import av
import numpy as np
import pydicom
import pytest
from PIL import Image

from medvid.io.dicom import DicomCine
from medvid.io.regions import box_from_regions
from medvid.io.render import RenderError, encode_mp4, even_size, masked_frames, render_cached, render_loop_bytes
from medvid.synth.echo import synthesize


@pytest.fixture(scope="module")
def loops(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    synthesize(out, studies=1, loops_per_study=2, rows=96, cols=128, frames_range=(12, 16), still_fraction=0.0,
               format_weights={"jpeg_ybr": 1.0})
    return sorted(p for p in (out / "dicom").rglob("US*") if p.is_file())


def _decode(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return s.codec_context.name, s.codec_context.pix_fmt, float(s.average_rate), frames


def test_loop_is_masked_h264_at_native_fps(loops):
    cine = DicomCine(loops[0])
    box = box_from_regions(cine.ds, cine.rows, cine.cols)
    assert box is not None and box[1] > 0  # the synthetic text strip lies above the sector
    frames = masked_frames(cine, box)
    assert frames.shape[0] == cine.n_frames  # cropped to the fan inside the region box:
    assert 0.5 * (box[3] - box[1]) < frames.shape[1] <= box[3] - box[1] and frames.shape[2] <= box[2] - box[0]
    full = cine.frames()
    assert full[:, :box[1]].max() > 200 and frames.max() > 0  # burned-in text exists, and is cropped away
    codec, pix_fmt, fps, decoded = _decode(render_loop_bytes(cine, box, max_side=320))
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert len(decoded) == cine.n_frames and fps == pytest.approx(cine.fps, rel=1e-3)
    h, w = decoded[0].shape[:2]
    assert h % 2 == 0 and w % 2 == 0 and (w, h) == even_size(frames.shape[2], frames.shape[1], 320)
    expected = np.asarray(Image.fromarray(frames[0]).resize((w, h), Image.BILINEAR)).astype(int)
    assert np.abs(decoded[0].astype(int) - expected).mean() < 12  # the masked sector, nothing else


def test_without_regions_the_moving_fan_is_the_mask(loops, tmp_path):
    ds = pydicom.dcmread(loops[1])
    box = box_from_regions(ds, int(ds.Rows), int(ds.Columns))
    del ds.SequenceOfUltrasoundRegions
    bare = tmp_path / "no_regions.dcm"
    ds.save_as(bare)
    cine = DicomCine(bare)
    full, frames = cine.frames(), masked_frames(cine, None)
    assert full[:, :box[1]].max() > 200  # burned-in text above the fan ...
    assert frames.shape[1] <= box[3] - box[1] + 2 and frames.shape[2] <= box[2] - box[0] + 2  # ... cropped away


def test_static_image_without_sector_is_refused():
    class Still:
        n_frames, rows, cols, fps, ds = 4, 32, 32, 30.0, pydicom.Dataset()

        def frames(self, idx):
            return np.full((len(idx), 32, 32, 3), 128, np.uint8)

    with pytest.raises(RenderError, match="no imaging sector"):
        masked_frames(Still())
    with pytest.raises(RenderError):
        encode_mp4(np.zeros((0, 4, 4, 3), np.uint8), 30, "/nonexistent/x.mp4")


def test_cache_is_reused_until_the_dicom_changes(loops, tmp_path):
    out = tmp_path / "loops" / "vi_x.mp4"
    render_cached(loops[0], out)
    first = out.stat().st_mtime_ns
    assert render_cached(loops[0], out).stat().st_mtime_ns == first
    st = loops[0].stat()
    os.utime(loops[0], ns=(st.st_atime_ns, first + 10**9))
    assert render_cached(loops[0], out).stat().st_mtime_ns != first
    assert not list(out.parent.glob(".*.tmp"))  # atomic: no temporary left behind


def test_real_ultrasound_file_renders():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm", download=False)
    if path is None:
        pytest.skip("pydicom test file not installed")
    cine = DicomCine(path)
    codec, pix_fmt, fps, decoded = _decode(render_loop_bytes(cine, None, max_side=160))
    assert codec == "h264" and len(decoded) == cine.n_frames
    assert max(decoded[0].shape[:2]) <= 160
