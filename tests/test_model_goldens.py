"""Golden outputs of every model medvid can build, as open_clip checks its model registry: each registry
name (``configs/models/*.yaml``) and each registered checkpoint kind is built with a fixed seed and random init
(nothing downloaded), run on a fixed input, and its outputs compared with ``model_goldens.json``. A change to a
model's forward, init or defaults fails here; if it is meant, rewrite the goldens once with
``python -m pytest tests/test_model_goldens.py --update-goldens`` and review the JSON diff.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn


GOLDENS = Path(__file__).with_name("model_goldens.json")
TEXTS = ["the left ventricle is mildly dilated", "the surgeon clips the cystic duct"]


def _input(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _registry_model(name: str) -> tuple[nn.Module, Callable[[nn.Module], dict]]:
    from medvid.models.factory import create_model, create_view_classifier

    if name.startswith("view-"):
        return create_view_classifier(name, pretrained=False), lambda m: {"logits": m(_input(2, 3, 2, 64, 64))}
    return create_model(name, pretrained=False), lambda m: {
        "video": m.encode_video(_input(2, 3, 4, 64, 64), normalize=False),
        "text": m.encode_text(**m.tokenize(TEXTS), normalize=False)}


def _surgvlp() -> nn.Module:
    from transformers import BertConfig

    from medvid.models.importers import SurgVLPModel
    from medvid.models.text import default_text_model_path, load_tokenizer

    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=80)
    return SurgVLPModel(bert, load_tokenizer(default_text_model_path()))


def _kind_model(kind: str) -> tuple[nn.Module, Callable[[nn.Module], dict]]:
    """Every registered kind but the two the registry names build (``video_text``, ``view_classifier``), with
    seeded ``_scaled_init`` weights (their default init is slow and not theirs to define: weights come from a
    publisher's file)."""
    from medvid.models import importers as imp
    from medvid.models.aggregate import ViewInformedAttention

    builders = {  # kind: (factory, forward, build on the meta device: big nets whose default init is slow)
        "echoprime_video": (imp.EchoPrimeVideoEncoder, lambda m: {"embedding": m(_input(1, 3, 16, 224, 224))}, True),
        "echoprime_view": (imp.EchoPrimeViewClassifier, lambda m: {"logits": m(_input(2, 3, 64, 64))}, True),
        "echonet_dynamic": (imp.EchoNetDynamic, lambda m: {"ef": m(_input(2, 3, 8, 32, 32))}, False),
        "panecho": (lambda: imp.PanEcho({"EF": 1, "LVSystolicFunction": 3, "pericardial-effusion": 1}),
                    lambda m: m(_input(2, 3, 16, 32, 32)), True),
        "view_attention": (ViewInformedAttention, lambda m: dict(zip(("study", "weights"), m(
            _input(2, 3, 8), _input(2, 3, len(m.view_names), seed=1).softmax(-1)))), False),
        "surgvlp": (_surgvlp, lambda m: {"video": m.encode_video(_input(2, 3, 2, 64, 64), normalize=False),
                                         "text": m.encode_text(**m.tokenize(TEXTS), normalize=False)}, False),
    }
    if kind not in builders:
        pytest.fail(f"model kind {kind!r} has no golden test: add a builder here and run --update-goldens")
    factory, forward, on_meta = builders[kind]
    if not on_meta:  # non-persistent buffers (BERT's position ids) need a real build
        return _scaled_init(factory(), 0), forward
    with torch.device("meta"):
        model = factory()
    return _scaled_init(model.to_empty(device="cpu"), 0), forward


def _scaled_init(model: nn.Module, seed: int) -> nn.Module:
    """Seeded weights that keep activations at scale through deep nets (so outputs differ per input), without
    the slow default init: matrices N(0, 1/fan_in), norm weights near 1, biases and statistics near 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                t.zero_()
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / max(1, t[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model


def _cases() -> list:
    import medvid.models.importers  # noqa: F401  (registers the importers' kinds)
    from medvid.models.checkpoint import model_kinds
    from medvid.models.factory import list_models

    cases = [pytest.param("registry", name, id=name) for name in list_models()]
    for kind in model_kinds():
        if kind not in ("video_text", "view_classifier"):
            marks = [pytest.mark.slow] if kind == "echoprime_video" else []  # an mViT on 16 x 224² frames
            cases.append(pytest.param("kind", kind, id=kind, marks=marks))
    return cases


def _summary(out: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Shape, mean, std and 8 evenly spaced values of each output (float64, enough to catch any change)."""
    summary = {}
    for key, value in sorted(out.items()):
        flat = value.detach().double().flatten()
        picks = torch.linspace(0, len(flat) - 1, min(8, len(flat))).long()
        summary[key] = {"shape": list(value.shape), "mean": float(flat.mean()),
                        "std": float(flat.std()) if len(flat) > 1 else 0.0, "values": flat[picks].tolist()}
    return summary


def test_registry_kinds_are_all_built_here():
    """The registry names build both medvid kinds; the importers' kinds are listed in ``_kind_model``."""
    from medvid.models.checkpoint import kind_of

    kinds = {kind_of(_registry_model(name)[0]).name for _, name in
             [c.values for c in _cases() if c.values[0] == "registry"]}
    assert kinds == {"video_text", "view_classifier"}


@pytest.mark.parametrize("source,name", _cases())
def test_forward_matches_golden(source, name, update_goldens):
    torch.manual_seed(0)
    model, forward = (_registry_model if source == "registry" else _kind_model)(name)
    with torch.no_grad():
        got = _summary(forward(model.eval()))
    goldens = json.loads(GOLDENS.read_text()) if GOLDENS.exists() else {}
    if update_goldens:
        goldens[name] = got
        GOLDENS.write_text(json.dumps(goldens, indent=1, sort_keys=True) + "\n")
        pytest.skip("goldens written")
    assert name in goldens, f"no golden for {name}: run with --update-goldens once and commit model_goldens.json"
    assert _differences(got, goldens[name]) == []


def _differences(got: dict, want: dict) -> list[str]:
    """What differs between two ``_summary`` results beyond float noise (relative 1e-4 of the output's scale)."""
    if set(got) != set(want):
        return [f"outputs {sorted(got)} != {sorted(want)}"]
    out = []
    for key in want:
        if got[key]["shape"] != want[key]["shape"]:
            out.append(f"{key} shape {got[key]['shape']} != {want[key]['shape']}")
            continue
        scale = max(want[key]["std"], abs(want[key]["mean"]), 1e-6)
        out += [f"{key} {stat}" for stat in ("mean", "std", "values")
                if got[key][stat] != pytest.approx(want[key][stat], rel=1e-4, abs=1e-4 * scale)]
    return out


def test_a_changed_forward_is_caught():
    """A 0.01 nudge to one weight of a registry model changes its summary beyond the tolerance."""
    torch.manual_seed(0)
    model, forward = _registry_model("view-effnetlite0-lecture")
    with torch.no_grad():
        before = _summary(forward(model.eval()))
        model.head[-1].weight[0, 0] += 1e-2
        after = _summary(forward(model))
    assert _differences(before, before) == [] and _differences(after, before) != []
