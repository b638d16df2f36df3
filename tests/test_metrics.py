"""medvid.metrics against sequences worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvid.metrics import (
    auroc,
    mean_absolute_error,
    phase_video_scores,
    recall_at_k,
    relaxed_phase_metrics,
    relaxed_phase_scores,
    strict_phase_metrics,
    tool_average_precision,
)


def test_recall_at_k_single_positive_by_index():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.2, 0.8], [0.3, 0.2, 0.1]])
    # query 0: positive 0 ranks 1; query 1: positive 1 ranks 3; query 2: positive 1 ranks 2.
    r = recall_at_k(sim, [0, 1, 1], ks=(1, 2, 3))
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@2"] == pytest.approx(2 / 3)
    assert r["recall@3"] == pytest.approx(1.0)
    assert r["median_rank"] == 2


def test_recall_at_k_multiple_positives_mask_and_numpy():
    sim = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    mask = np.array([[True, False, True, False], [False, False, False, False]])
    # query 0: best positive is col 2 (0.5), beaten by 0.9 and 0.7 -> rank 3; query 1 has no positive.
    r = recall_at_k(sim, mask, ks=(1, 3))
    assert r["recall@1"] == 0.0 and r["recall@3"] == 1.0 and r["median_rank"] == 3


def test_recall_at_k_rejects_bad_shapes():
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 3)), [0, 1, 2])


def test_strict_macro_f1_uses_labels_in_gt_or_pred():
    # labels {0,1,2}: F1_0 = 2*(2/3*1)/(2/3+1) = 0.8, F1_1 = 0 (missed), F1_2 = 0 (false alarm).
    s = phase_video_scores([0, 0, 1, 1], [0, 0, 0, 2])
    assert s["accuracy"] == 0.5
    assert s["macro_f1"] == pytest.approx(0.8 / 3)
    # a phase absent from both sequences is ignored: perfect prediction -> F1 1.0
    assert phase_video_scores([0, 0, 3], [0, 0, 3])["macro_f1"] == 1.0


def test_strict_metrics_average_over_videos():
    m = strict_phase_metrics([([0, 0, 1, 1], [0, 0, 0, 2]), ([1, 1], [1, 1])])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((0.8 / 3 + 1.0) / 2)


def test_relaxed_forgives_adjacent_phase_near_boundaries():
    gt = [0, 0, 0, 0, 1, 1, 1, 1]
    pred = [0, 0, 0, 1, 0, 1, 1, 1]  # early switch to 1 at the end of 0; late stay in 0 at the start of 1
    r = relaxed_phase_scores(gt, pred, n_phases=2, fps=1.0, tolerance_s=2, cholec80_exceptions=False)
    assert r["accuracy"] == 1.0
    # phase 0: union {0..4}, all forgiven -> 5/5; precision 5/4 and recall 5/4 clipped to 1.
    np.testing.assert_allclose(r["jaccard"], [1.0, 1.0])
    np.testing.assert_allclose(r["precision"], [1.0, 1.0])
    assert phase_video_scores(gt, pred)["accuracy"] == 0.75


def test_relaxed_hand_worked_errors_and_nan_for_absent_phase():
    gt = [0, 0, 0, 0, 1, 1, 1, 1]
    pred = [2, 0, 0, 0, 1, 1, 1, 0]  # 2 is not adjacent; 0 at the end of phase 1 is a -1 (not an early switch)
    r = relaxed_phase_scores(gt, pred, n_phases=3, fps=1.0, tolerance_s=2, cholec80_exceptions=False)
    assert r["accuracy"] == 0.75
    # phase 0: union {0,1,2,3,7}, TP {1,2,3} -> J 3/5, P 3/4, R 3/4; phase 1: union {4..7}, TP 3 -> J 3/4, P 3/3, R 3/4
    np.testing.assert_allclose(r["jaccard"][:2], [0.6, 0.75])
    np.testing.assert_allclose(r["precision"][:2], [0.75, 1.0])
    np.testing.assert_allclose(r["recall"][:2], [0.75, 0.75])
    assert math.isnan(r["jaccard"][2]) and math.isnan(r["precision"][2]) and math.isnan(r["recall"][2])


def test_relaxed_window_is_limited_to_tolerance():
    gt = [0] * 6 + [1] * 6
    pred = [0, 0, 1, 0, 0, 0] + [1] * 6  # +1 error 3 samples before the boundary: outside a 2 s window
    r = relaxed_phase_scores(gt, pred, n_phases=2, fps=1.0, tolerance_s=2, cholec80_exceptions=False)
    assert r["accuracy"] == pytest.approx(11 / 12)
    # at 2 fps the same 2 s window covers 4 samples and forgives it
    r2 = relaxed_phase_scores(gt, pred, n_phases=2, fps=2.0, tolerance_s=2, cholec80_exceptions=False)
    assert r2["accuracy"] == 1.0


def test_relaxed_cholec80_exceptions():
    # GallbladderPackaging (4) followed by CleaningCoagulation (5); prediction jumps to Retraction (6) early
    gt = [4] * 5 + [5] * 5
    pred = [4, 4, 4, 6, 6] + [5] * 5
    plain = relaxed_phase_scores(gt, pred, fps=1.0, tolerance_s=3, cholec80_exceptions=False)
    chole = relaxed_phase_scores(gt, pred, fps=1.0, tolerance_s=3, cholec80_exceptions=True)
    assert plain["accuracy"] == 0.8 and chole["accuracy"] == 1.0
    # Retraction (6) after Packaging (4): a late transition of -2 at its start is forgiven only for phases 5/6
    gt2 = [4] * 4 + [6] * 4
    pred2 = [4] * 4 + [4, 4, 6, 6]
    assert relaxed_phase_scores(gt2, pred2, tolerance_s=3, cholec80_exceptions=True)["accuracy"] == 1.0
    assert relaxed_phase_scores(gt2, pred2, tolerance_s=3, cholec80_exceptions=False)["accuracy"] == 0.75
    # for early phases a +2 jump is never forgiven
    gt3, pred3 = [1] * 4 + [2] * 4, [1, 1, 1, 3] + [2] * 4
    assert relaxed_phase_scores(gt3, pred3, tolerance_s=3)["accuracy"] == 7 / 8


def test_relaxed_short_segment_uses_whole_segment():
    gt = [0, 1, 2, 2, 2]
    pred = [0, 2, 2, 2, 2]  # the 1-sample phase 1 is predicted as the next phase: within its (shortened) window
    assert relaxed_phase_scores(gt, pred, n_phases=3, tolerance_s=10, cholec80_exceptions=False)["accuracy"] == 1.0


def test_relaxed_metrics_nanmean_over_videos_per_phase():
    v1 = ([0, 0, 1, 1], [0, 0, 1, 1])  # perfect, has phases 0 and 1
    v2 = ([0, 0, 0, 0], [0, 0, 2, 2])  # phase 0 only; 2 is not adjacent -> J0 = 2/4
    m = relaxed_phase_metrics([v1, v2], n_phases=3, tolerance_s=1, cholec80_exceptions=False)
    np.testing.assert_allclose(m["jaccard_per_phase"][:2], [0.75, 1.0])
    assert math.isnan(m["jaccard_per_phase"][2])
    assert m["jaccard"] == pytest.approx(0.875)
    assert m["accuracy"] == pytest.approx(0.75)


def test_tool_average_precision_hand_worked():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    r = tool_average_precision(y, s)
    assert r["ap"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(r["ap"][1])  # never present
    assert r["map"] == pytest.approx((1 + 2 / 3) / 2)


def test_auroc_and_mae():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert math.isnan(auroc([1, 1, float("nan")], [0.2, 0.3, 0.4]))
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(20):  # the rank formula equals scikit-learn's, ties included
        y = rng.integers(0, 2, 40)
        sc = rng.integers(0, 6, 40) / 5.0
        if 0 < y.sum() < len(y):
            assert auroc(y, sc) == pytest.approx(roc_auc_score(y, sc))
    assert mean_absolute_error([50, 60, float("nan")], [55, 50, 10]) == pytest.approx(7.5)
