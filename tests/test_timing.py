"""The time-based sampler: exact frame mapping at common and NTSC rates, irregular timing."""
from fractions import Fraction

import numpy as np
import pytest

from medvid.io.timing import clip_times, frame_timestamps, regular_times, span_times, times_to_indices


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0, 60.0])
def test_frame_start_times_map_to_their_own_frame(fps):
    ts = frame_timestamps(1000, fps=fps)
    assert np.array_equal(times_to_indices(ts, ts), np.arange(1000))


def test_ntsc_mapping_matches_exact_rational_arithmetic():
    fps = Fraction(30000, 1001)
    ts = frame_timestamps(2000, fps=float(fps))
    times = np.arange(0, 60, 0.37)
    expected = [int(Fraction(t).limit_denominator(10**6) * fps) for t in times]  # floor(t * fps)
    assert times_to_indices(times, ts).tolist() == expected


def test_30_and_60_fps_loops_give_the_same_times():
    t30 = clip_times(16, fps=15.0)
    idx30 = times_to_indices(t30, frame_timestamps(90, fps=30))
    idx60 = times_to_indices(t30, frame_timestamps(180, fps=60))
    assert np.array_equal(idx30 * 2, idx60)
    assert np.array_equal(idx30, np.arange(0, 32, 2))


def test_irregular_frame_durations_and_clamping():
    ts = frame_timestamps(4, frame_durations_s=[0.1, 0.2, 0.1, 0.1])
    assert ts.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.4])
    assert times_to_indices([-1.0, 0.05, 0.29, 0.3, 9.0], ts).tolist() == [0, 0, 1, 2, 3]


def test_regular_and_span_times():
    assert regular_times(3.5, fps=1.0).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert regular_times(3.0, fps=1.0).tolist() == [0.0, 1.0, 2.0]
    assert span_times(0.0, 4.0, 4).tolist() == [0.5, 1.5, 2.5, 3.5]
    with pytest.raises(ValueError):
        span_times(2.0, 1.0, 3)
    with pytest.raises(ValueError):
        frame_timestamps(3, frame_durations_s=[0.1])
