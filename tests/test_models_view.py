"""ViewClassifier: frame and clip level, label sets, cached-feature head, masking."""
from __future__ import annotations

import pytest
import torch

from medvid.models.factory import create_view_classifier
from medvid.models.view import ViewClassifier
from medvid.utils import seed_everything
from medvid.vocab import ECHO_VIEWS, LECTURE_FRAME_TYPES


def _clf(**kw):
    seed_everything(0)
    return create_view_classifier({"dropout": 0.0, **kw}, pretrained=False).eval()


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))


def test_default_is_echo_views_frame_level(clips):
    clf = _clf()
    assert clf.labels == list(ECHO_VIEWS) and not clf.clip_level
    with torch.no_grad():
        assert clf(clips[:, :, 0]).shape == (2, 11)
        per_frame = clf.forward_features(clips)
        assert per_frame.shape == (2, 4, clf.feature_dim)
        # a clip through a frame-level model = mean of its frames' logits
        frame_logits = torch.stack([clf(clips[:, :, t]) for t in range(4)], 1)
        torch.testing.assert_close(clf(clips), frame_logits.mean(1), atol=1e-5, rtol=1e-5)


def test_lecture_label_set_and_custom_labels():
    assert _clf(label_set="lecture_frame_types").labels == list(LECTURE_FRAME_TYPES)
    assert create_view_classifier("view-effnetlite0-lecture", pretrained=False).num_classes == 3
    assert _clf(labels=["a", "b"]).num_classes == 2
    direct = ViewClassifier("tf_efficientnet_lite0", labels=5, clip_level=True, pretrained=False)
    assert direct.labels == ["0", "1", "2", "3", "4"] and direct.clip_level
    with pytest.raises(ValueError, match="unknown label set"):
        _clf(label_set="nope")


@pytest.mark.parametrize("clip_level", [False, True])
def test_padded_frames_and_cached_features(clip_level, clips):
    clf = _clf(clip_level=clip_level, temporal="attention")
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    noisy = clips.clone()
    noisy[0, :, 2:] = 1e4
    with torch.no_grad():
        a = clf(clips, mask)
        torch.testing.assert_close(a, clf(noisy, mask))
        torch.testing.assert_close(a[:1], clf(clips[:1, :, :2]), atol=1e-5, rtol=1e-5)
        feats = torch.stack([clf.backbone(clips[:, :, t]) for t in range(4)], 1)
        torch.testing.assert_close(clf.classify_features(feats, mask), a, atol=1e-5, rtol=1e-5)
    if clip_level:
        with pytest.raises(ValueError, match="clip-level"):
            clf(clips[:, :, 0])


def test_head_trains_on_frozen_backbone(clips):
    clf = _clf(clip_level=True)
    clf.freeze_backbone()
    clf.train()
    assert not clf.backbone.training
    loss = torch.nn.functional.cross_entropy(clf(clips), torch.tensor([0, 3]))
    loss.backward()
    assert all(p.grad is None for p in clf.backbone.parameters())
    assert clf.head[-1].weight.grad.abs().sum() > 0
    assert clf.predict_proba(clips).sum(-1).allclose(torch.ones(2))


def test_train_views_continuing_a_saved_classifier_feeds_its_recorded_contract(tmp_path):
    """``medvid train-views init_from=`` a classifier trained on 8 frames every 2nd with the box mask at 48²:
    the loops are sampled, masked and sized that way (not the job's 4 frames every 4th), the feature cache
    holds 8 frames, and the saved model records 8; a setting given to the job wins."""
    import json

    from medvid.config import load_config
    from medvid.models.checkpoint import record_training_input
    from medvid.transforms.contract import Sampling
    from medvid.pipelines import train_views as job
    from medvid.training.views import sampling

    from echo_testdata import ingest_synth
    from medvid.synth.echo import synthesize

    synthesize(tmp_path / "synth", studies=2, seed=1, loops_per_study=3, rows=64, cols=80, frames_range=(20, 24),
               still_fraction=0.0)
    ingest_synth(tmp_path / "synth", tmp_path / "ingest")
    clf = _clf(input_size=48)
    record_training_input(clf, Sampling(8, None, 2, "box"))
    saved = clf.save_pretrained(tmp_path / "first")

    def cfg(*extra):
        return load_config(job.Config, "view_classifier", None, [
            f"ingest_dir={tmp_path / 'ingest'}", f"dicom_root={tmp_path / 'synth' / 'dicom'}", f"init_from={saved}",
            "train.max_steps=2", "train.batch_size=4", "train.eval_every=0", "train.progress=false", *extra])

    c = cfg(f"out={tmp_path / 'run'}")
    job.run(c)
    meta = json.loads((tmp_path / "run" / "cache" / "views" / "meta.json").read_text())
    assert meta["t"] == 8 and meta["fingerprint"]["frame_stride"] == 2 and meta["fingerprint"]["mask"] == "box"
    back = ViewClassifier.from_pretrained(tmp_path / "run" / "model")
    c = back.pretrained_cfg
    assert (c.num_frames, c.frame_stride, c.mask, c.input_size) == (8, 2, "box", 48)
    card = (tmp_path / "run" / "model" / "README.md").read_text()  # a card travels: no data or output folder in it
    assert "Command:" in card and str(tmp_path) not in card and str(tmp_path.resolve()) not in card
    s = sampling(cfg("n_frames=3", "target_fps=10"), back)
    assert (s.num_frames, s.fps, s.frame_stride, s.mask) == (3, 10.0, None, "box")
    fresh = job.sampling(load_config(job.Config, "view_classifier", None, []), back)
    assert (fresh.num_frames, fresh.frame_stride, fresh.mask) == (4, 4, "fan")  # a new classifier's defaults
