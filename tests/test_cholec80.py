"""Cholec80-layout reader: splits by name, time -> label mapping at 25 fps, mismatches reported, bad files named."""
from __future__ import annotations

import av
import numpy as np
import pytest

from medvid.datasets.cholec80 import Cholec80
from medvid.errors import MedvidError
from medvid.vocab import AUTOLAPARO_PHASES, CHOLEC80_PHASES, CHOLEC80_TOOLS


def write_video(path, n_frames, fps=25, size=(48, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width, s.pix_fmt = *size, "yuv420p"
        for i in range(n_frames):
            img = np.full((*size, 3), i % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def phase_file(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Frame\tPhase\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(labels)))


def tool_file(path, rows, step=25):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n"
                    + "".join(f"{k * step}\t" + "\t".join(map(str, r)) + "\n" for k, r in enumerate(rows)))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three videos: video01 (matching annotations), video41 (annotation 3 s too long), video50 (no annotations)."""
    r = tmp_path_factory.mktemp("cholec")
    # video01: 100 frames = 4 s; phases switch at frame 40 and 90; tools every 25th frame
    write_video(r / "videos" / "video01.mp4", 100)
    phase_file(r / "phase_annotations" / "video01-phase.txt",
               ["Preparation"] * 40 + ["CalotTriangleDissection"] * 50 + ["ClippingCutting"] * 10)
    tool_file(r / "tool_annotations" / "video01-tool.txt",
              [[1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]])
    write_video(r / "videos" / "video41.mp4", 50)
    phase_file(r / "phase_annotations" / "video41-phase.txt", ["Preparation"] * 125)
    write_video(r / "videos" / "video50.mp4", 25)
    return r


def test_splits_by_name(root):
    ds = Cholec80(root)
    assert ds.videos() == ["video01", "video41", "video50"]
    assert ds.videos("cholec80_40_40:train") == ["video01"]
    assert ds.videos("cholec80_40_40:test") == ["video41", "video50"]
    assert ds.videos("cholec80_40_8_32:val") == ["video41"]
    assert ds.videos("cholec80_40_8_32:test") == ["video50"]
    assert ds.videos("cholec80_40_8_32") == ["video01", "video41", "video50"]
    with pytest.raises(MedvidError, match="unknown split"):
        ds.videos("cholec81")
    with pytest.raises(MedvidError, match="no subset"):
        ds.videos("cholec80_40_40:val")


def test_phases_at_times(root):
    ds = Cholec80(root)
    assert ds.has_annotations("video01") and not ds.has_annotations("video50")
    # frame 40 starts at 1.6 s; frame 90 at 3.6 s
    got = ds.phases_at("video01", [0.0, 1.59, 1.6, 3.59, 3.6, 3.99])
    names = [CHOLEC80_PHASES[i] for i in got]
    assert names == ["Preparation", "Preparation", "CalotTriangleDissection", "CalotTriangleDissection",
                     "ClippingCutting", "ClippingCutting"]
    assert got.dtype == np.int64


def test_tools_at_times(root):
    ds = Cholec80(root)
    got = ds.tools_at("video01", [0.5, 1.0, 2.99, 3.0])
    assert got.shape == (4, 7)
    assert got[:, 0].tolist() == [1, 1, 0, 0]  # Grasper
    assert got[:, 2].tolist() == [0, 1, 1, 0]  # Hook
    assert got[:, 4].tolist() == [0, 0, 0, 1]  # Clipper


def test_times_after_annotation_end_are_unknown_not_clipped(root, caplog):
    ds = Cholec80(root)
    got = ds.phases_at("video01", [3.9, 4.0, 7.0])
    assert got.tolist() == [2, -1, -1]
    assert "after the phase annotation ends" in caplog.text


def test_length_mismatch_is_reported_with_numbers(root):
    problems = Cholec80(root).check()
    assert len(problems) == 1
    p = problems[0]
    assert p["video"] == "video41" and p["kind"] == "phase_length_mismatch"
    assert p["annotation_s"] == 5.0 and p["video_s"] == 2.0 and p["diff_s"] == 3.0 and p["video_frames"] == 50


def test_folder_of_videos_without_annotations(tmp_path):
    write_video(tmp_path / "case_a.mp4", 30)
    ds = Cholec80(tmp_path)
    assert ds.videos() == ["case_a"]
    assert not ds.has_annotations("case_a")
    with ds.open("case_a") as v:
        assert v.n_frames == 30
    with pytest.raises(MedvidError, match="annotation file not found"):
        ds.phases_at("case_a", [0.0])


def test_bad_annotation_lines_name_file_and_line(tmp_path):
    write_video(tmp_path / "videos" / "video02.mp4", 5)
    phase_file(tmp_path / "phase_annotations" / "video02-phase.txt", ["Preparation", "Preparation", "Lunch"])
    with pytest.raises(MedvidError, match=r"video02-phase.txt:4: unknown phase 'Lunch'"):
        Cholec80(tmp_path).phases_at("video02", [0])
    (tmp_path / "phase_annotations" / "video02-phase.txt").write_text("Frame\tPhase\n0\tPreparation\nx\tPreparation\n")
    with pytest.raises(MedvidError, match=r"video02-phase.txt:3: frame number 'x'"):
        Cholec80(tmp_path).phases_at("video02", [0])


def test_autolaparo_numeric_phases(tmp_path):
    write_video(tmp_path / "videos" / "video15.mp4", 50)
    phase_file(tmp_path / "phase_annotations" / "video15-phase.txt", [1] * 25 + [2] * 25)
    ds = Cholec80(tmp_path, dataset="autolaparo", phase_index_base=1)
    assert ds.videos("autolaparo_10_4_7:test") == ["video15"]
    got = ds.phases_at("video15", [0.5, 1.5])
    assert [AUTOLAPARO_PHASES[i] for i in got] == ["Preparation", "Dividing Ligament and Peritoneum"]
    assert ds.check() == []
