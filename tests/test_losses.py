"""Losses against hand-computed values on 2×2 cases, plus properties that a broken loss fails."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medvid.training.losses import (aligned_mil_nce, info_nce, mil_nce, section_info_nce, siglip,
                                    sinkhorn_with_dustbin)


def softplus(x: float) -> float:
    """log(1 + e^x): the cross-entropy of a two-way softmax whose wrong logit leads by x."""
    return math.log1p(math.exp(x))


A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # A @ B.T = [[1, 0.6], [0, 0.8]]


def test_info_nce_hand_computed():
    # rows (A→B): [1, .6] target 0, [0, .8] target 1; columns (B→A): [1, 0] target 0, [.6, .8] target 1
    rows = (softplus(-0.4) + softplus(-0.8)) / 2
    cols = (softplus(-1.0) + softplus(-0.2)) / 2
    assert info_nce(A, B, 1.0).item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    rows2 = (softplus(-0.8) + softplus(-1.6)) / 2  # scale 2 doubles every logit gap
    cols2 = (softplus(-2.0) + softplus(-0.4)) / 2
    assert info_nce(A, B, torch.tensor(2.0)).item() == pytest.approx((rows2 + cols2) / 2, abs=1e-6)


def test_info_nce_symmetric_permutation_invariant_and_learnable_temperature():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    b = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    perm = torch.randperm(6, generator=g)
    assert info_nce(a, b, 3.0).item() == pytest.approx(info_nce(b, a, 3.0).item(), abs=1e-6)
    assert info_nce(a[perm], b[perm], 3.0).item() == pytest.approx(info_nce(a, b, 3.0).item(), abs=1e-6)
    assert info_nce(a, a, 10.0) < info_nce(a, b, 10.0)  # matched pairs score lower
    log_scale = torch.tensor(1.0, requires_grad=True)
    info_nce(a, a, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad < 0  # sharper logits help a perfect match


def test_mil_nce_hand_computed():
    video = A
    texts = torch.tensor([[[1.0, 0.0], [0.6, 0.8]],     # clip 0: anchor + one extra positive
                          [[0.0, 1.0], [9.0, 9.0]]])    # clip 1: anchor + padding (masked out)
    mask = torch.tensor([[True, True], [True, False]])
    # clip→text over the 3 valid texts: clip 0 scores [1, .6, 0] (positives 1, .6); clip 1 [0, .8, 1] (positive 1)
    c2t = (-math.log((math.e + math.exp(0.6)) / (math.e + math.exp(0.6) + 1))
           - math.log(math.e / (1 + math.exp(0.8) + math.e))) / 2
    # text→clip: t00 [1, 0]→0, t01 [.6, .8]→0, t10 [0, 1]→1
    t2c = (softplus(-1.0) + softplus(0.2) + softplus(-1.0)) / 3
    assert mil_nce(video, texts, mask, 1.0).item() == pytest.approx((c2t + t2c) / 2, abs=1e-6)


def test_mil_nce_with_one_positive_is_info_nce():
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(5, 3, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 3, generator=g), dim=-1)
    texts = torch.stack([t, torch.zeros_like(t)], dim=1)
    mask = torch.tensor([[True, False]] * 5)
    assert mil_nce(v, texts, mask, 4.0).item() == pytest.approx(info_nce(v, t, 4.0).item(), abs=1e-5)
    with pytest.raises(ValueError):
        mil_nce(v, texts, ~mask, 4.0)  # the anchor slot must be valid


def test_siglip_hand_computed():
    # logits = 2·A@B.T − 1 = [[1, .2], [−1, .6]]; labels +1 on the diagonal, −1 elsewhere
    want = (softplus(-1.0) + softplus(0.2) + softplus(-1.0) + softplus(-0.6)) / 2
    assert siglip(A, B, 2.0, -1.0).item() == pytest.approx(want, abs=1e-6)
    bias = torch.tensor(0.0, requires_grad=True)
    siglip(A, A, 10.0, bias).backward()
    # logits: 10 on the diagonal, 0 off it. d/d bias = (1/B) Σ -z σ(-z·logit):
    # positives give -σ(-10) each, negatives σ(0) = 0.5 each.
    want_grad = (2 * -torch.sigmoid(torch.tensor(-10.0)).item() + 2 * 0.5) / 2
    assert bias.grad.item() == pytest.approx(want_grad, abs=1e-6)


def test_section_info_nce_hand_computed():
    # two studies, two sections; report 0 has both sections, report 1 only section 1.
    study = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                          [[0.0, 1.0], [0.6, 0.8]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                         [[5.0, 5.0], [0.6, 0.8]]])  # report 1's section 0 is absent (masked)
    mask = torch.tensor([[True, True], [False, True]])
    # score(i, j) = mean over j's sections of study_i[s]·text_j[s]
    s00, s10 = (1 + 1) / 2, (0 + 0.8) / 2
    s01, s11 = 0.8, 0.6 * 0.6 + 0.8 * 0.8
    rows = (softplus(s01 - s00) + softplus(s10 - s11)) / 2  # study -> report
    cols = (softplus(s10 - s00) + softplus(s01 - s11)) / 2  # report -> study
    assert section_info_nce(study, text, mask, 1.0).item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    one = section_info_nce(A[:, None], B[:, None], torch.ones(2, 1, dtype=torch.bool), 2.0)
    assert one.item() == pytest.approx(info_nce(A, B, 2.0).item(), abs=1e-6)
    with pytest.raises(ValueError):
        section_info_nce(study, text, torch.zeros(2, 2, dtype=torch.bool), 1.0)


def test_shape_errors():
    with pytest.raises(ValueError):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError):
        siglip(torch.zeros(2, 3), torch.zeros(2, 4), 1.0, 0.0)


def test_sinkhorn_with_dustbin_hand_computed_and_marginals():
    # one row, one column: plan [[p, 1-p], [1-p, p]] with p / (1 - p) = exp((s - z) / (2 eps))
    s, z, eps = 0.7, 0.2, 0.1
    plan = sinkhorn_with_dustbin(torch.tensor([[s]]), z, eps=eps, iters=200)
    p = 1 / (1 + math.exp(-(s - z) / (2 * eps)))
    assert plan.flatten().tolist() == pytest.approx([p, 1 - p, 1 - p, p], abs=1e-5)
    g = torch.Generator().manual_seed(0)
    plan = sinkhorn_with_dustbin(torch.randn(3, 4, generator=g), 0.1, eps=0.1, iters=500)
    assert plan.sum(1).tolist() == pytest.approx([1, 1, 1, 4], abs=1e-3)  # rows carry 1, the dustbin row C
    assert plan.sum(0).tolist() == pytest.approx([1, 1, 1, 1, 3], abs=1e-4)  # columns 1, the dustbin column B


def test_aligned_mil_nce_without_a_dustbin_is_mil_nce():
    texts = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    never = torch.tensor(-1e4)  # "no match" never wins: every clip counts in full
    assert aligned_mil_nce(A, texts, mask, 1.0, never).item() == pytest.approx(mil_nce(A, texts, mask, 1.0).item(), abs=1e-6)


def test_aligned_mil_nce_discounts_speech_that_matches_nothing_and_learns_its_dustbin():
    # clips 0-2 match their sentence; clip 3's "sentence" (a filler) points away from every clip
    video = F.normalize(torch.eye(4) + 0.4, dim=1).requires_grad_(True)  # similar clips: the loss has work to do
    t = torch.eye(4)
    t[3] = F.normalize(torch.tensor([-1.0, -1.0, -1.0, 0.0]), dim=0)
    texts, mask = t[:, None, :], torch.ones(4, 1, dtype=torch.bool)
    dustbin = torch.tensor(0.3, requires_grad=True)
    aligned_mil_nce(video, texts, mask, 10.0, dustbin).backward()
    g_aligned = video.grad.norm(dim=1)
    assert all(float(-video.grad[i] @ t[i]) > 0 for i in range(3))  # a step brings matched clips nearer their sentence
    video.grad = None
    mil_nce(video, texts, mask, 10.0).backward()
    g_plain = video.grad.norm(dim=1)
    assert g_aligned[3] < 0.3 * g_plain[3]  # the filler hardly pulls its clip
    assert dustbin.grad is not None and dustbin.grad.abs() > 0  # the "no match" score is learnt
    with pytest.raises(ValueError):
        aligned_mil_nce(video, texts, ~mask, 10.0, dustbin)
