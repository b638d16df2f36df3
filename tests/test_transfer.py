"""Transfer building blocks: few-shot samplers, probes at chance on random labels, clip averaging, TCN head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvid.metrics import auroc, mean_absolute_error
from medvid.transfer.features import clip_starts, echo_clip_features
from medvid.transfer.fewshot import k_shot, label_fraction, mean_sd, strata
from medvid.transfer.finetune import predict_videos
from medvid.transfer.probe import fit_logistic, fit_multilabel, fit_ridge, split_validation
from medvid.transfer.protocol import study_mean
from medvid.transfer.temporal import DilatedTCN, predict_tcn, train_tcn


def test_label_fraction_is_stratified_and_seeded():
    y = np.array([0] * 80 + [1] * 20)
    a = label_fraction(y, 0.1, seed=0)
    assert len(a) == 10 and np.sum(y[a] == 1) == 2 and np.sum(y[a] == 0) == 8
    assert np.array_equal(a, label_fraction(y, 0.1, seed=0))
    assert not np.array_equal(a, label_fraction(y, 0.1, seed=1))
    tiny = label_fraction(y, 0.01, seed=3)  # 1 % still holds both classes
    assert sorted(set(y[tiny])) == [0, 1]
    assert np.array_equal(label_fraction(y, 1.0, seed=5), np.arange(100))
    with pytest.raises(ValueError):
        label_fraction(y, 0.0, seed=0)


def test_regression_targets_are_stratified_by_quantile():
    ef = np.random.default_rng(0).uniform(15, 75, 200)
    bins = strata(ef, 4)
    assert sorted(np.bincount(bins)) == [50, 50, 50, 50]
    pick = label_fraction(ef, 0.1, seed=2)
    assert len(pick) == 20 and sorted(np.bincount(bins[pick])) == [5, 5, 5, 5]  # low and high EF both sampled


def test_k_shot_takes_k_per_class_and_all_of_a_small_class():
    y = np.array([0] * 30 + [1] * 30 + [2] * 2)
    idx = k_shot(y, 5, seed=1)
    assert np.bincount(y[idx]).tolist() == [5, 5, 2]
    assert np.array_equal(idx, k_shot(y, 5, seed=1)) and not np.array_equal(idx, k_shot(y, 5, seed=2))


def test_mean_sd_over_seeds():
    assert mean_sd([1.0, 3.0]) == {"mean": 2.0, "sd": pytest.approx(np.sqrt(2)), "n": 2}
    assert mean_sd([4.0])["sd"] == 0.0


def test_probes_on_random_labels_stay_at_chance():
    rng = np.random.default_rng(0)
    x, x_val, x_test = (rng.normal(size=(n, 64)) for n in (300, 150, 400))
    y, y_val, y_test = (rng.integers(0, 2, n) for n in (300, 150, 400))
    probe = fit_logistic(x, y, x_val, y_val, 2)
    assert probe.param in (0.001, 0.01, 0.1, 1.0, 10.0)
    assert abs(auroc(y_test, probe.predict(x_test)[:, 1]) - 0.5) < 0.08
    t, t_val, t_test = (rng.uniform(20, 70, n) for n in (300, 150, 400))
    ridge = fit_ridge(x, t, x_val, t_val)
    mean_mae = mean_absolute_error(t_test, np.full(len(t_test), t.mean()))
    assert mean_absolute_error(t_test, ridge.predict(x_test)) > 0.97 * mean_mae  # no better than the mean
    signal = fit_logistic(x, (x[:, 0] > 0).astype(int), x_val, (x_val[:, 0] > 0).astype(int), 2)
    assert auroc(x_test[:, 0] > 0, signal.predict(x_test)[:, 1]) > 0.97  # ...but it learns a real signal


def test_multilabel_and_one_class_subsets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    y = np.stack([(x[:, 0] > 0), np.zeros(200, bool), (x[:, 1] > 0.5)], 1).astype(int)
    probe = fit_multilabel(x[:120], y[:120], x[120:], y[120:])
    p = probe.predict(x[120:])
    assert p.shape == (80, 3) and np.all(p[:, 1] == 0.0) and probe.val_score > 0.9
    one = fit_logistic(x[:10], np.full(10, 2), x[10:], np.zeros(190, int), 4)
    assert one.predict(x[:3]).tolist() == [[0, 0, 1, 0]] * 3


def test_split_validation_holds_out_whole_groups():
    groups = np.repeat(np.arange(10), 5)
    tr, va = split_validation(groups, 0.2, seed=0)
    assert len(set(groups[va])) == 2 and not set(groups[tr]) & set(groups[va])


def test_clip_windows_and_per_study_averaging():
    assert clip_starts(40, 32).tolist() == list(range(9)) and clip_starts(20, 32).tolist() == [0]
    assert clip_starts(40, 32, step=4).tolist() == [0, 4, 8]
    feats = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)  # feature value = frame number
    mask = torch.tensor([True] * 8 + [False] * 2)  # 8 real frames, 2 padding
    stats = echo_clip_features(None, feats, mask, clip_frames=4, kind="backbone_stats")
    assert stats.shape == (5, 6) and stats[:, 0].tolist() == [1.5, 2.5, 3.5, 4.5, 5.5]  # starts 0..4
    short = echo_clip_features(None, feats, mask, clip_frames=16, kind="backbone_stats")
    assert short.shape == (1, 6) and short[0, 0] == pytest.approx(3.5)  # one clip over the 8 real frames
    owner = np.array([0, 0, 0, 2, 2])
    means = study_mean(np.array([1.0, 2.0, 6.0, 4.0, 8.0]), owner, 3)
    assert means[0] == 3.0 and np.isnan(means[1]) and means[2] == 6.0


def test_video_prediction_is_the_mean_over_all_clips():
    class LastFrame(torch.nn.Module):  # predicts the feature of a clip's last real frame
        def forward(self, x, m):
            return x[torch.arange(len(x)), m.sum(1) - 1, 0]

    feats = torch.arange(12, dtype=torch.float32)[:, None]
    video = (feats, torch.ones(12, dtype=torch.bool))
    assert predict_videos(LastFrame(), [video], clip_frames=4)[0] == pytest.approx(np.mean(np.arange(3, 12)))


def test_dilated_tcn_receptive_field_and_learning():
    net = DilatedTCN(4, 3, channels=8, layers=3, causal=True).eval()
    x = torch.zeros(1, 4, 40)
    x[0, :, 20] = 1.0
    with torch.no_grad():
        y = net(x) - net(torch.zeros(1, 4, 40))
    changed = torch.nonzero(y.abs().sum(1)[0] > 1e-7).flatten()
    assert changed.min() == 20 and changed.max() <= 20 + 2 ** 4 - 2  # causal: nothing before the impulse
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(4):  # phases in order, features noisy indicators of the phase
        y = np.repeat([0, 1, 2], rng.integers(15, 25, 3))
        seqs.append((np.eye(3)[y] * 0.8 + rng.normal(0, 0.5, (len(y), 3)), y))
    model, best = train_tcn(seqs[:3], seqs[3:], 3, lambda p: float(np.mean(p[0].argmax(1) == seqs[3][1])),
                            epochs=15, lr=5e-3, channels=16, layers=3, seed=0)
    assert best > 0.85 and predict_tcn(model, [seqs[3][0]])[0].shape == (len(seqs[3][1]), 3)
