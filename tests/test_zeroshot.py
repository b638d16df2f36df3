"""medvid.zeroshot: prompt files, heads, smoothing, plots, streaming embedding windows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.vocab import AUTOLAPARO_PHASES, CHOLEC80_PHASES, CHOLEC80_TOOLS
from medvid.zeroshot.adaptation import pseudo_labels, self_train
from medvid.zeroshot.calibration import calibrate_logits, prior_adjust
from medvid.zeroshot.classifier import FindingsClassifier, PhaseClassifier, ToolClassifier
from medvid.transforms.contract import PretrainedCfg
from medvid.zeroshot.embed import clip_windows, prefetch, sampling_from_contract
from medvid.zeroshot.expansion import corpus_sentences, expand_classes
from medvid.zeroshot.plots import confusion_matrix_plot, phase_ribbon
from medvid.zeroshot.prompts import (
    ensemble,
    expand_numeric,
    load_findings,
    load_prompt_set,
    model_text_encoder,
)
from medvid.zeroshot.smoothing import phase_order_transitions, smooth, viterbi

PROMPTS = config_dir() / "prompts"


class TableEncoder:
    """A text encoder for tests: each sentence maps to a fixed vector; records every call."""

    def __init__(self, table: dict[str, list[float]]):
        self.table, self.calls = table, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return F.normalize(torch.tensor([self.table[t] for t in texts], dtype=torch.float32), dim=-1)


def test_shipped_prompt_files_load_in_dataset_order():
    ph = load_prompt_set(PROMPTS / "cholec80_phases.yaml", CHOLEC80_PHASES)
    assert ph.classes == list(CHOLEC80_PHASES) and all(len(ph.prompts[c]) >= 2 for c in ph.classes)
    assert load_prompt_set(PROMPTS / "autolaparo_phases.yaml", AUTOLAPARO_PHASES).classes == list(AUTOLAPARO_PHASES)
    tools = load_prompt_set(PROMPTS / "cholec80_tools.yaml", CHOLEC80_TOOLS)
    assert set(tools.negatives) == set(CHOLEC80_TOOLS) and set(tools.thresholds) == set(CHOLEC80_TOOLS)
    findings = {f.name: f for f in load_findings(PROMPTS / "echo_findings.yaml")}
    ef = findings["ejection_fraction"]
    assert ef.kind == "numeric" and ef.values[0] == 5 and ef.values[-1] == 80 and len(ef.values) == 76


def test_prompt_file_json_reordered_and_errors(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"classes": {"b": "second thing", "a": ["first", "first again"]}}))
    ps = load_prompt_set(p, expected=["a", "b"])
    assert ps.classes == ["a", "b"] and ps.prompts["b"] == ["second thing"]
    with pytest.raises(MedvidError, match="missing"):
        load_prompt_set(p, expected=["a", "b", "c"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  a: []\n")
    with pytest.raises(MedvidError, match="class 'a'"):
        load_prompt_set(bad)
    with pytest.raises(MedvidError, match="not found"):
        load_prompt_set(tmp_path / "nope.yaml")
    with pytest.raises(MedvidError, match="placeholder"):
        expand_numeric("EF IS NORMAL", [50])


def test_expand_numeric_and_ensemble():
    assert expand_numeric("LV EJECTION FRACTION IS <#>%", [5, 42.5]) == [
        "LV EJECTION FRACTION IS 5%", "LV EJECTION FRACTION IS 42.5%"]
    e = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    out = ensemble(e, [2, 1])
    torch.testing.assert_close(out, torch.tensor([[0.7071, 0.7071, 0], [0, 0, 1.0]]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        ensemble(e, [1, 1])


def test_phase_classifier_ensembles_prompts_and_encodes_once(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("classes:\n  x: [x1, x2]\n  y: [y1]\n  z: [z1]\n")
    enc = TableEncoder({"x1": [1, 0.2, 0], "x2": [1, -0.2, 0], "y1": [0, 1, 0], "z1": [0, 0, 1]})
    clf = PhaseClassifier.from_prompts(load_prompt_set(p), enc)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == 4  # one encoder pass for all prompts
    torch.testing.assert_close(clf.class_emb[0], torch.tensor([1.0, 0, 0]))  # x1, x2 averaged
    emb = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.9]])
    probs = clf.probs(emb)
    assert probs.argmax(1).tolist() == [0, 2]
    cos = F.normalize(emb, dim=-1) @ clf.class_emb.T
    torch.testing.assert_close(probs, (100 * cos).softmax(1))


def test_tool_classifier_sigmoid_with_negatives_and_thresholds(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("classes:\n  a: [a]\n  b: [b]\nnegatives:\n  a: [no a]\nthresholds:\n  b: 0.9\n")
    enc = TableEncoder({"a": [1, 0, 0], "b": [0, 1, 0], "no a": [0, 0, 1]})
    clf = ToolClassifier.from_prompts(load_prompt_set(p), enc, scale=10.0, bias=0.5)
    emb = torch.tensor([[0.8, 0.6, 0.0]])
    probs = clf.probs(emb)
    # a: sigmoid(10 * (0.8 - 0.0)); b has no negative: sigmoid(10 * (0.6 - 0.5))
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[8.0, 1.0]])))
    assert clf.predict(emb).tolist() == [[True, False]]  # b: 0.73 < its 0.9 threshold


def test_findings_numeric_reads_best_ranked_values_and_binary_scores(tmp_path):
    p = tmp_path / "f.yaml"
    p.write_text("findings:\n  ef:\n    type: numeric\n    prompts: ['EF <#>']\n    values: {start: 10, stop: 50, step: 10}\n"
                 "  eff:\n    prompts: [effusion]\n    negatives: [no effusion]\n  mr:\n    prompts: [mr]\n")
    # EF prompt embeddings on a circle: angle grows with the value, so a video embedding at angle(30) ranks 30 first
    ang = {v: v / 100 for v in (10, 20, 30, 40, 50)}
    table = {f"EF {v}": [np.cos(a), np.sin(a), 0, 0] for v, a in ang.items()}
    table |= {"effusion": [0, 0, 1, 0], "no effusion": [0, 0, 0, 1], "mr": [0, 0, 0.6, 0.8]}
    clf = FindingsClassifier(load_findings(p), TableEncoder(table), top_k=3)
    emb = torch.tensor([[np.cos(0.3), np.sin(0.3), 0.0, 0.0], [0.0, 0.0, 0.9, 0.1]], dtype=torch.float32)
    out = clf(emb)
    assert out["ef"][0] == pytest.approx(30.0)  # top-3 = 30, 20, 40 (or 40) -> mean 30
    assert out["eff"][1] > 0.99 and out["eff"][0] == pytest.approx(0.5)
    assert out["mr"][1] == pytest.approx(float(F.normalize(emb[1], dim=0) @ torch.tensor([0, 0, 0.6, 0.8])), abs=1e-5)


class _FakeTextModel:
    def tokenize(self, texts):
        ids = torch.tensor([[len(t), t.count(" ")] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def encode_text(self, ids, mask):
        return ids.float() * 3.0


def test_model_text_encoder_batches_and_normalises():
    enc = model_text_encoder(_FakeTextModel(), batch_size=2)
    out = enc(["a b", "ccc", "d e f"])
    assert out.shape == (3, 2)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_smoothing_fixes_isolated_flips_and_respects_phase_order():
    t = 40
    probs = np.full((t, 3), 0.1)
    truth = np.repeat([0, 1, 2], [15, 15, 10])
    probs[np.arange(t), truth] = 0.8
    noisy = probs.copy()
    noisy[[5, 20]] = [0.1, 0.1, 0.8]  # two isolated wrong frames predicting phase 2
    assert (noisy.argmax(1) != truth).sum() == 2
    for method in ("moving_average", "median", "hmm"):
        out = smooth(noisy, method, window=5)
        assert out.shape == noisy.shape
        assert (out.argmax(1) == truth).all(), method
    assert smooth(noisy, "none") is not None and (smooth(noisy, "none") == noisy).all()
    with pytest.raises(ValueError):
        smooth(noisy, "kalman")
    a = phase_order_transitions(4, stay=0.9, backward=0.1)
    np.testing.assert_allclose(a.sum(1), 1.0)
    assert a[1, 2] > a[1, 3] > a[1, 0] > 0  # the next phase is likelier than a later one, backward rarest
    # Viterbi: a path going backwards is penalised when the evidence is weak
    e = np.array([[0.9, 0.1], [0.45, 0.55], [0.9, 0.1]])
    assert viterbi(e, phase_order_transitions(2, stay=0.9, backward=0.01)).tolist() == [0, 0, 0]


def test_plots_write_pngs(tmp_path):
    times = np.arange(120.0)
    gt = np.repeat(np.arange(4), 30)
    pred = np.roll(gt, 5)
    gt[-3:] = -1  # unannotated tail drawn blank
    phase_ribbon(tmp_path / "r.png", times, pred, ["a", "b", "c", "d"], gt, title="v")
    phase_ribbon(tmp_path / "r2.png", times, pred, ["a", "b", "c", "d"])  # predictions only
    confusion_matrix_plot(tmp_path / "c.png", gt[:-3], pred[:-3], ["a", "b", "c", "d"])
    for name in ("r.png", "r2.png", "c.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert not list(tmp_path.glob(".*.tmp"))


def test_clip_windows_and_prefetch():
    w = clip_windows(7, step=2, clip_frames=3)
    assert w.tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 5], [5, 6, 6]]
    assert clip_windows(3, 1, 1).tolist() == [[0], [1], [2]]
    assert list(prefetch(iter([1, 2, 3]))) == [1, 2, 3]


def _logits_fn(class_emb, scale=100.0):
    return PhaseClassifier(class_emb, [str(i) for i in range(len(class_emb))], scale).logits


def test_calibration_keeps_a_one_phase_video_when_the_model_is_right():
    """A video that is phase 2 throughout, scored right with a margin on every frame, stays phase 2."""
    torch.manual_seed(0)
    classes = F.normalize(torch.randn(7, 32), dim=-1)
    emb = classes[2] + 0.15 * torch.randn(300, 32)  # frames near class 2, with noise
    logits = _logits_fn(classes)(emb)
    assert (logits.argmax(1) == 2).all()  # the model is right on every frame
    for strength in (0.25, 0.5):
        out = calibrate_logits(emb, _logits_fn(classes), "prior", strength)
        assert (out.argmax(1) == 2).all(), strength
    # the documented guarantee at any strength: frames right by more than strength/(1-strength)·log T keep it
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    for strength in (0.75, 0.9):
        safe = margin > strength / (1 - strength) * np.log(len(emb))
        out = calibrate_logits(emb, _logits_fn(classes), "prior", strength).argmax(1)
        assert safe.any() and (out[safe] == 2).all()
    assert (calibrate_logits(emb, _logits_fn(classes), "none").argmax(1) == 2).all()
    with pytest.raises(ValueError):
        prior_adjust(logits, 1.0)  # full strength would erase a one-phase video's label


def test_prior_calibration_stops_one_class_swallowing_the_others():
    """Frames of phases 0 and 1, all leaning towards class 2's prompt: raw argmax is 2 everywhere;
    the video's own marginal damps class 2 and the frames return to their phases (no labels used)."""
    torch.manual_seed(1)
    classes = torch.eye(3, 16)
    truth = torch.tensor([0] * 50 + [1] * 50)
    emb = 0.4 * classes[truth] + 0.5 * classes[2] + 0.002 * torch.randn(100, 16)
    raw = _logits_fn(classes, scale=20.0)(emb)
    assert (raw.argmax(1) == 2).float().mean() > 0.9
    fixed = calibrate_logits(emb, _logits_fn(classes, scale=20.0), "prior", 0.9).argmax(1)
    assert (fixed == truth).float().mean() > 0.9


def _clustered_videos(seed: int):
    """Three phases as well-separated clusters; prompts that put the 0|1 boundary in the wrong place
    (prompt 0 leans towards phase 1's frames), as prompts far from the video space do."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(3, 24, generator=g), dim=-1)
    truth = [torch.tensor([0] * 40 + [1] * 40 + [2] * 40), torch.tensor([0] * 30 + [1] * 60 + [2] * 30)]
    emb = [centres[t] + 0.25 * torch.randn(len(t), 24, generator=g) for t in truth]
    prompts = centres.clone()
    prompts[0] = F.normalize(centres[0] + 3.0 * centres[1], dim=-1)
    probs = [(20.0 * F.normalize(e, dim=-1) @ prompts.T).softmax(-1).numpy() for e in emb]
    return [e.numpy() for e in emb], probs, [t.numpy() for t in truth], prompts


def test_self_training_moves_boundaries_to_the_data_without_labels():
    emb, probs, truth, _ = _clustered_videos(0)
    before = np.mean(np.concatenate([p.argmax(1) == t for p, t in zip(probs, truth)]))
    adapted = self_train(emb, probs)
    after = np.mean(np.concatenate([p.argmax(1) == t for p, t in zip(adapted, truth)]))
    assert before < 0.88 and after > before + 0.05  # 0.83 -> 0.92 when written
    assert [a.shape for a in adapted] == [p.shape for p in probs]
    np.testing.assert_allclose(np.concatenate(adapted).sum(1), 1.0, atol=1e-9)
    for a, b in zip(adapted, self_train(emb, probs)):  # deterministic
        np.testing.assert_array_equal(a, b)
    idx, y = pseudo_labels(np.concatenate(probs), 0.2)  # every predicted class contributes its most confident
    assert set(y) == set(np.concatenate(probs).argmax(1)) and len(idx) <= 0.2 * 240 + 3
    with pytest.raises(ValueError):
        self_train(emb, probs, fraction=0.0)
    assert self_train([], []) == []  # a run where no video could be read


def test_self_training_keeps_a_one_phase_video_when_the_model_is_right():
    """Alone, a one-phase video is returned unchanged (its pseudo-labels hold one class); among other
    videos, a one-phase video scored right keeps its phase."""
    emb, probs, truth, prompts = _clustered_videos(1)
    one = F.normalize(torch.from_numpy(emb[0][truth[0] == 2]), dim=-1)
    one_probs = (20.0 * one @ prompts.T).softmax(-1).numpy()
    assert (one_probs.argmax(1) == 2).all()  # the model is right on every frame
    alone = self_train([one.numpy()], [one_probs])
    np.testing.assert_array_equal(alone[0], one_probs)
    among = self_train([*emb, one.numpy()], [*probs, one_probs])
    assert (among[-1].argmax(1) == 2).all()


def test_prompt_expansion_is_deterministic_order_free_and_label_free():
    table = {"clip it": [1, 0, 0, 0], "cut it": [0, 1, 0, 0],
             "the clip goes on": [0.9, 0.1, 0.2, 0], "a clip applier fires": [0.8, 0, 0.3, 0.1],
             "scissors divide": [0.1, 0.9, 0, 0.2], "halfway thing": [0.5, 0.5, 0, 0], "slides now": [0, 0, 0, 1]}
    enc = TableEncoder(table)
    base = enc(["clip it", "cut it"])
    corpus = ["the clip goes on", "a clip applier fires", "scissors divide", "halfway thing", "slides now"]
    one = expand_classes(base, ["Clip", "Cut"], corpus, enc, k=2, weight=0.5, margin=0.05)
    two = expand_classes(base, ["Clip", "Cut"], list(reversed(corpus)) + corpus[:2], enc, k=2, weight=0.5, margin=0.05)
    assert torch.equal(one.class_emb, two.class_emb) and one.neighbours == two.neighbours
    assert one.neighbours == {"Clip": ["the clip goes on", "a clip applier fires"], "Cut": ["scissors divide"]}
    # an ambiguous sentence (equally near both) joins neither; only corpus sentences are used
    assert "halfway thing" not in sum(one.neighbours.values(), [])
    assert torch.allclose(one.class_emb.norm(dim=1), torch.ones(2))
    # label-free: the function takes no labels, only class embeddings, names, sentences and a text encoder
    import inspect

    assert not {"labels", "y", "gt", "targets"} & set(inspect.signature(expand_classes).parameters)


def test_corpus_sentences_reads_pairs_and_says_what_is_wrong(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"text": "b second", "extra_texts": ["a first", "b second"]}\n\n{"text": "c third"}\n')
    assert corpus_sentences(p) == ["a first", "b second", "c third"]
    assert corpus_sentences(tmp_path) == ["a first", "b second", "c third"]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(MedvidError, match="bad.jsonl:1: not a JSON line"):
        corpus_sentences(tmp_path / "bad.jsonl")
    with pytest.raises(MedvidError, match="no pairs.jsonl"):
        corpus_sentences(tmp_path / "missing.jsonl")


def test_tool_scores_relative_to_all_tools():
    enc = TableEncoder({"a": [1, 0, 0], "b": [0, 1, 0], "no a": [0, 0, 1], "no b": [0, 0, 1]})
    from medvid.zeroshot.prompts import PromptSet

    ps = PromptSet(["A", "B"], {"A": ["a"], "B": ["b"]}, {"A": ["no a"], "B": ["no b"]})
    head = ToolClassifier.from_prompts(ps, enc, scale=10.0, reference="tools")
    emb = torch.tensor([[1.0, 0.2, 0.0], [0.2, 1.0, 0.0]])
    p = head.probs(emb)
    assert p[0, 0] > 0.5 > p[0, 1] and p[1, 1] > 0.5 > p[1, 0]
    with pytest.raises(ValueError, match="reference"):
        ToolClassifier.from_prompts(ps, enc, reference="other")


def test_sampling_follows_the_model_contract():
    trained = {"num_frames": 4, "fps": 2.0, "input_size": 112}
    assert sampling_from_contract(PretrainedCfg.from_dict(trained), 1.0) == {"clip_frames": 4, "clip_fps": 2.0, "source": "model pretrained_cfg"}
    assert sampling_from_contract(PretrainedCfg.from_dict({**trained, "fps": 2.6}), 1.0)["clip_fps"] == 3.0  # nearest multiple of the rate
    assert sampling_from_contract(PretrainedCfg(num_frames=4), 1.0)["clip_frames"] == 1  # no recorded rate: frame-level
    assert sampling_from_contract(PretrainedCfg.from_dict(trained), 1.0, clip_frames=1) == {"clip_frames": 1, "clip_fps": 1.0, "source": "settings"}
