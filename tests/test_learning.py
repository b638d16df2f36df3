"""Learning is real: retrieval on held-out data beats chance and the same model untrained.

* fast: the echo objective (view-informed attention per report section + video–report MIL-NCE)
  with the real packaged text tower on real synthetic reports (``medvid.synth.echo``), and frame
  features that carry each study's hidden findings through a fixed random map plus noise (a
  stand-in for a backbone; the slow tests use the real one);
* slow: the whole ``medvid pretrain`` job on synthetic DICOM echo studies and synthetic lectures.

Chance recall@5 with one positive among N candidates is 5/N. A broken loss (wrong targets, a
sign flip, no gradient to one side) leaves recall at chance and fails these tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _findings_vector(f) -> np.ndarray:
    return np.array([f.ef / 100, f.lv_dilation, f.la_dilation, f.pericardial_effusion / 3,
                     f.mitral_regurgitation / 3, f.tricuspid_regurgitation / 3], dtype=np.float32)


@pytest.fixture(scope="module")
def echo_world(tmp_path_factory):
    """120 synthetic studies: reports from the synthesizer, 3 loops each with findings-bearing features."""
    from medvid.io.reports import format_report
    from medvid.models.factory import create_model
    from medvid.synth.echo import report_sections, sample_findings
    from medvid.training.data import EchoStudy, text_tower_features
    from medvid.training.feature_cache import TextFeatureCache
    from medvid.vocab import ECHO_VIEWS

    torch.manual_seed(0)
    model = create_model("medvid-effnetlite0-minilm-mean", pretrained=True)
    model.freeze_backbone()
    model.freeze_text()
    rng = np.random.default_rng(0)
    feat_dim, n_frames = model.video.feature_dim, 4
    view_maps = {v: rng.normal(size=(6, feat_dim)).astype(np.float32) for v in ECHO_VIEWS}
    studies, features = [], {}
    for i in range(120):
        f = sample_findings(rng)
        sections = report_sections(f, rng)
        z = _findings_vector(f)
        keys, views = [], []
        for j, view in enumerate(rng.choice(ECHO_VIEWS, 3, replace=False)):
            key = f"v{i}_{j}"
            x = z @ view_maps[view] + 0.5 * rng.normal(size=(n_frames, feat_dim)).astype(np.float32)
            features[key] = (torch.from_numpy(x.astype(np.float32)), torch.ones(n_frames, dtype=torch.bool))
            keys.append(key)
            views.append(str(view))
        studies.append(EchoStudy(f"s{i}", "train" if i < 80 else "test", keys, format_report(sections),
                                 sections, views))
    texts = TextFeatureCache(lambda t: text_tower_features(model, t),
                             [t for s in studies for t in (s.report, *s.sections.values())])
    return model, studies, features, texts


def test_echo_objective_learns_text_to_study_retrieval(echo_world, tmp_path):
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.training.data import EchoStudyFeatures, known_view_probs
    from medvid.metrics import chance_recall
    from medvid.training.evaluate import retrieval_metrics
    from medvid.training.objectives import EchoContrastive, section_scores
    from medvid.training.trainer import Trainer, TrainConfig

    model, studies, features, texts = echo_world
    objective = EchoContrastive(model, ViewInformedAttention.from_prior_file(), video_weight=0.5)
    data = {sp: EchoStudyFeatures([s for s in studies if s.split == sp], features, texts,
                                  lambda key, view: known_view_probs(view), max_videos=4) for sp in ("train", "test")}

    def text_to_study_r5() -> float:
        objective.eval()
        with torch.no_grad():
            b = torch.utils.data.default_collate([data["test"][i] for i in range(len(data["test"]))])
            e = objective.embed(b)
            sim = section_scores(e["study"], e["sections"], b["section_mask"])
        objective.train()
        return retrieval_metrics(None, None, sim=sim)["text_to_video_recall@5"]

    untrained = text_to_study_r5()
    cfg = TrainConfig(max_steps=80, batch_size=16, lr=3e-3, warmup_steps=8, checkpoint_every=1000,
                      eval_every=0, progress=False, device="cpu")
    Trainer(objective, data["train"], cfg, tmp_path).fit()
    trained = text_to_study_r5()
    chance = chance_recall(len(data["test"]), 5)  # 40 held-out studies: 0.125
    print(f"text->study recall@5: trained {trained:.3f}, untrained {untrained:.3f}, chance {chance:.3f}")
    assert trained >= 2.5 * chance
    assert trained >= untrained + 0.15


# --------------------------------------------------------------------------- slow: the whole job


def _medvid(*args: str, timeout: int = 1800) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "medvid.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_pretrain_surgical_lectures_end_to_end(tmp_path):
    """Synthetic lectures → pairs → `medvid pretrain` (frozen EfficientNet-Lite0, cached features):
    clip→text recall@5 on held-out lectures is far above chance and above the untrained model."""
    _medvid("synth", "lectures", str(tmp_path / "lect"), "--lectures", "6", "--seed", "0", "audio=false")
    _medvid("lectures", "index", str(tmp_path / "lect"), "--out", str(tmp_path / "idx"))
    _medvid("pretrain", str(REPO / "configs" / "surgical_pretrain.yaml"), f"out={tmp_path / 'run'}",
            f"lectures.pairs={tmp_path / 'idx' / 'pairs.jsonl'}", f"lectures.root={tmp_path / 'lect'}",
            "model_overrides={input_size: 112}", "train.max_steps=150", "train.eval_every=0",
            "train.progress=false")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    r5, before, chance = (m["test"]["video_to_text_recall@5"], m["test_untrained"]["video_to_text_recall@5"],
                          m["test"]["chance_recall@5"])
    assert r5 >= 3 * chance and r5 >= before + 0.1, m
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "model" / "train_config.yaml").is_file()


@pytest.mark.slow
def test_pretrain_echo_end_to_end(tmp_path):
    """Synthetic DICOM echo studies → ingest → `medvid pretrain` (frozen backbone, cached features):
    text→study recall@5 on the held-out test split beats chance and the untrained model."""
    raw, ing = tmp_path / "raw", tmp_path / "ing"
    _medvid("synth", "echo", str(raw), "--studies", "120", "--seed", "3", "progress=false")
    _medvid("ingest", str(raw / "dicom"), "--out", str(ing), f"reports={raw / 'reports.csv'}",
            f"views={raw / 'views.csv'}", "progress=false")
    _medvid("pretrain", str(REPO / "configs" / "echo_pretrain.yaml"), f"out={tmp_path / 'run'}",
            f"echo.ingest_dir={ing}", f"echo.dicom_root={raw / 'dicom'}", "echo.n_frames=8",
            "model_overrides={input_size: 112}", "train.max_steps=200", "train.eval_every=0",
            "train.progress=false")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    r5, before, chance = (m["test"]["text_to_video_recall@5"], m["test_untrained"]["text_to_video_recall@5"],
                          m["test"]["chance_recall@5"])
    assert r5 >= 1.5 * chance and r5 > before, m
    assert (tmp_path / "run" / "model" / "view_attention" / "config.json").is_file()  # the table: a model folder
    # a new echo model takes a motion image as a 9th frame: recorded in its contract and in the cache
    contract = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["pretrained_cfg"]
    cached = json.loads((tmp_path / "run" / "cache" / "echo" / "meta.json").read_text())["fingerprint"]
    assert (contract["num_frames"], contract["motion"]) == (8, "std") and (cached["n_frames"], cached["motion"]) == (9, "std")


@pytest.mark.slow
def test_train_views_end_to_end(tmp_path):
    """Synthetic echo → ingest → `medvid train-views` (frozen backbone, class-balanced):
    held-out view accuracy far above chance (1/11), with a confusion matrix written."""
    raw, ing = tmp_path / "raw", tmp_path / "ing"
    _medvid("synth", "echo", str(raw), "--studies", "30", "--seed", "5", "progress=false")
    _medvid("ingest", str(raw / "dicom"), "--out", str(ing), f"views={raw / 'views.csv'}", "progress=false")
    _medvid("train-views", f"ingest_dir={ing}", f"dicom_root={raw / 'dicom'}", f"out={tmp_path / 'run'}",
            "train.max_steps=60", "train.eval_every=0", "train.progress=false")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test"]["accuracy"] > 0.5, m
    assert (tmp_path / "run" / "confusion_test.csv").is_file()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_pretrain_refuses_an_unknown_alignment_before_any_work(tmp_path):
    from medvid.config import config_dir, load_config
    from medvid.errors import MedvidError
    from medvid.pipelines import pretrain

    (tmp_path / "pairs.jsonl").write_text("")
    cfg = load_config(pretrain.Config, None, config_dir() / "surgical_pretrain.yaml",
                      [f"out={tmp_path / 'run'}", f"lectures.pairs={tmp_path / 'pairs.jsonl'}",
                       f"lectures.root={tmp_path}", "lectures.alignment=dtw"])
    with pytest.raises(MedvidError, match="lectures.alignment must be one of"):
        pretrain.run(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_pretraining_on_a_random_world_beats_the_untrained_model_zero_shot(tmp_path):
    """A world nobody designed (`style=random`, a development seed): lectures → pairs → `medvid pretrain`
    → `medvid zero-shot phase` on that world's surgery videos; the pretrained model's strict accuracy beats
    the same architecture untrained (random projection) by a margin, through the same job."""
    from medvid.config import config_dir, load_config
    from medvid.models.checkpoint import record_training_input
    from medvid.pipelines import pretrain
    from medvid.transforms.contract import Sampling

    world = ["--seed", "1000", "style=random", "height=112", "width=112"]
    _medvid("synth", "lectures", str(tmp_path / "lect"), "--lectures", "8", "audio=false", *world)
    _medvid("lectures", "index", str(tmp_path / "lect"), "--out", str(tmp_path / "idx"))
    _medvid("synth", "surgery", str(tmp_path / "surg"), "ids=[41,42,43]", "duration_scale=0.4", *world)
    run = [f"lectures.pairs={tmp_path / 'idx' / 'pairs.jsonl'}", f"lectures.root={tmp_path / 'lect'}",
           "model_overrides={input_size: 112}", "train.max_steps=300", "train.eval_every=0", "train.progress=false"]
    _medvid("pretrain", str(REPO / "configs" / "surgical_pretrain.yaml"), f"out={tmp_path / 'run'}", *run)
    cfg = load_config(pretrain.Config, None, config_dir() / "surgical_pretrain.yaml", [f"out={tmp_path / 'u'}", *run])
    torch.manual_seed(cfg.train.seed)
    untrained = pretrain.build_model(cfg)
    record_training_input(untrained, Sampling(cfg.lectures.n_frames, cfg.lectures.sample_fps, mask="none"))
    untrained.save_pretrained(tmp_path / "untrained")
    accuracy = {}
    for name, model in (("trained", tmp_path / "run" / "model"), ("untrained", tmp_path / "untrained")):
        _medvid("zero-shot", "phase", str(tmp_path / "surg"), "--model", str(model), "--out", str(tmp_path / f"zs_{name}"),
                "plots=false", "expand_k=0")
        m = json.loads((tmp_path / f"zs_{name}" / "metrics.json").read_text())
        accuracy[name] = m["results"]["raw"]["strict"]["accuracy"]
    print("strict accuracy", accuracy)
    assert accuracy["trained"] >= accuracy["untrained"] + 0.15 and accuracy["trained"] >= 2 / 7, accuracy
