"""ViewInformedAttention and the shipped section x view prior."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvid.errors import MedvidError
from medvid.models.aggregate import ViewInformedAttention, load_section_view_prior
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

K = len(ECHO_VIEWS)
S = len(ECHO_SECTIONS)


def _onehot(views: list[str]) -> torch.Tensor:
    return F.one_hot(torch.tensor([ECHO_VIEWS.index(v) for v in views]), K).float()


@pytest.fixture(scope="module")
def via():
    return ViewInformedAttention.from_prior_file()


def test_shipped_prior_is_clinically_sensible():
    prior = load_section_view_prior()
    assert prior.shape == (S, K) and (prior >= 0).all()

    def best(section: str) -> str:
        return ECHO_VIEWS[int(prior[ECHO_SECTIONS.index(section)].argmax())]

    assert best("IVC") == "Subcostal"
    assert best("Aorta") == "SSN"
    row = prior[ECHO_SECTIONS.index("Left Ventricle")]
    assert row[ECHO_VIEWS.index("A4C")] > row[ECHO_VIEWS.index("SSN")]
    av = prior[ECHO_SECTIONS.index("Aortic Valve")]
    assert av[ECHO_VIEWS.index("Parasternal_Long")] > av[ECHO_VIEWS.index("Subcostal")]


def test_prior_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("sections:\n  Left Ventricle:\n    A9C: 1.0\n")
    with pytest.raises(MedvidError, match="unknown view 'A9C'"):
        load_section_view_prior(bad)
    bad.write_text("sections:\n  Spleen:\n    A4C: 1.0\n")
    with pytest.raises(MedvidError, match="unknown sections"):
        load_section_view_prior(bad)


def test_weights_follow_views_and_output_is_normalised(via):
    views = ["A4C", "Subcostal", "SSN"]
    emb = F.normalize(torch.randn(1, 3, 32), dim=-1)
    study, w = via(emb, _onehot(views).unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
    assert study.shape == (1, S, 32) and w.shape == (1, S, 3)
    torch.testing.assert_close(study.norm(dim=-1), torch.ones(1, S))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, S))
    assert int(w[0, ECHO_SECTIONS.index("IVC")].argmax()) == 1      # subcostal
    assert int(w[0, ECHO_SECTIONS.index("Aorta")].argmax()) == 2    # suprasternal
    assert int(w[0, ECHO_SECTIONS.index("Left Ventricle")].argmax()) == 0  # A4C
    # the study embedding is the normalised weighted sum
    torch.testing.assert_close(study[0], F.normalize(w[0] @ emb[0], dim=-1))


def test_padded_videos_do_not_change_output(via):
    emb = torch.randn(2, 5, 16)
    probs = torch.randn(2, 5, K).softmax(-1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    emb2, probs2 = emb.clone(), probs.clone()
    emb2[~mask] = float("nan")
    probs2[~mask] = 0.7
    a, wa = via(emb, probs, mask)
    b, wb = via(emb2, probs2, mask)
    assert torch.equal(a, b) and torch.equal(wa, wb)
    assert (wa[~mask.unsqueeze(1).expand(-1, S, -1)] == 0).all()
    c, _ = via(emb[:1, :3], probs[:1, :3])
    torch.testing.assert_close(a[:1], c)


def test_single_video_and_one_hundred_videos(via):
    one, w1 = via(F.normalize(torch.randn(1, 1, 8), dim=-1), torch.rand(1, 1, K).softmax(-1))
    assert torch.allclose(w1, torch.ones(1, S, 1))
    emb = torch.randn(3, 100, 64)
    probs = torch.rand(3, 100, K).softmax(-1)
    mask = torch.rand(3, 100) > 0.3
    mask[:, 0] = True
    study, w = via(emb, probs, mask)
    assert study.shape == (3, S, 64) and torch.isfinite(study).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, S))


def test_table_is_learnable_and_gradients_flow():
    via = ViewInformedAttention.from_prior_file(learnable=True)
    emb = torch.randn(2, 4, 8, requires_grad=True)
    study, _ = via(emb, torch.rand(2, 4, K).softmax(-1))
    study[:, :, 0].sum().backward()
    assert via.log_table.grad is not None and via.log_table.grad.abs().sum() > 0
    assert emb.grad is not None
    fixed = ViewInformedAttention.from_prior_file(learnable=False)
    assert not any(p.requires_grad for p in fixed.parameters())
    assert "log_table" in fixed.state_dict()


def test_bad_inputs_are_errors(via):
    with pytest.raises(ValueError, match="view_probs"):
        via(torch.randn(1, 2, 8), torch.rand(1, 2, K + 1))
    with pytest.raises(ValueError, match="at least one valid video"):
        via(torch.randn(1, 2, 8), torch.rand(1, 2, K), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="prior must be"):
        ViewInformedAttention(["a"], ["x", "y"], prior=torch.ones(2, 2))


def _learned(seed: int = 0) -> ViewInformedAttention:
    via = ViewInformedAttention.from_prior_file(learnable=True)
    with torch.no_grad():
        via.log_table.add_(torch.randn(S, K, generator=torch.Generator().manual_seed(seed)))
    return via


def test_the_table_is_a_model_kind_of_the_checkpoint_format(tmp_path):
    """Saved inside a video model folder (``view_attention/``) like any kind, read back frozen and exact;
    the table's own folder loads too, and ``load_pretrained`` dispatches on its kind."""
    from medvid.models.aggregate import view_attention_dir
    from medvid.models.checkpoint import load_pretrained, read_config

    via = _learned()
    folder = via.save_pretrained(view_attention_dir(tmp_path / "model"))
    assert read_config(folder)["kind"] == "view_attention"
    assert read_config(folder)["config"] == {"sections": list(ECHO_SECTIONS), "views": list(ECHO_VIEWS)}
    for source in (tmp_path / "model", folder):
        back = ViewInformedAttention.from_pretrained(source)
        assert torch.equal(back.log_table, via.log_table.detach()) and not any(p.requires_grad for p in back.parameters())
    assert isinstance(load_pretrained(folder), ViewInformedAttention)


def test_a_model_folder_written_before_the_table_was_a_kind_still_loads(tmp_path, caplog):
    """Older folders hold ``view_attention.safetensors`` + ``view_attention.json`` beside the weights; a folder
    with neither falls back to the shipped prior, with a warning."""
    import json

    from safetensors.torch import save_file

    via = _learned(1)
    old = tmp_path / "old"
    old.mkdir()
    save_file({"log_table": via.log_table.detach().contiguous()}, str(old / "view_attention.safetensors"))
    (old / "view_attention.json").write_text(json.dumps({"sections": list(ECHO_SECTIONS), "views": list(ECHO_VIEWS)}))
    assert torch.equal(ViewInformedAttention.from_pretrained(old).log_table, via.log_table.detach())
    (tmp_path / "none").mkdir()
    prior = ViewInformedAttention.from_pretrained(tmp_path / "none")
    assert torch.equal(prior.table, ViewInformedAttention.from_prior_file().table.detach())
    assert "shipped section x view prior" in caplog.text
    save_file({"log_table": torch.zeros(2, 2)}, str(old / "view_attention.safetensors"))
    with pytest.raises(MedvidError, match="does not fit"):
        ViewInformedAttention.from_pretrained(old)
