"""Shared model test data: random weights without the slow default init, and publishers' reference networks
that more than one test file builds. Not a test module: test files import it by name."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn


def fill_random(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every tensor (norm statistics included) without the slow default init; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
            else:
                t.zero_()
    return model.eval()


def random_weights(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` built on the meta device, then given ``fill_random`` weights on the CPU."""
    with torch.device("meta"):
        model = factory()
    return fill_random(model.to_empty(device="cpu"), seed)


def echoprime_reference() -> nn.Module:
    """EchoPrime's video encoder as its code builds it (echo_prime/model.py): mViT-v2-S, head -> 512."""
    from torchvision.models.video import mvit_v2_s

    model = mvit_v2_s(weights=None)
    model.head[-1] = nn.Linear(768, 512)
    return model


def import_tiny_echoprime(folder: Path) -> tuple[Path, Path]:
    """EchoPrime's encoder and view classifier with random weights in the publisher's layout, imported through
    ``medvid import`` into ``folder/echoprime`` and ``folder/echoprime-view`` (returned)."""
    from typer.testing import CliRunner

    from medvid.cli import app
    from medvid.models.importers import echoprime_view_classifier

    for family, factory, name in (("echoprime", echoprime_reference, "echo_prime_encoder.pt"),
                                  ("echoprime-view", echoprime_view_classifier, "view_classifier.pt")):
        torch.save(random_weights(factory, 4).state_dict(), folder / name)
        r = CliRunner().invoke(app, ["import", family, str(folder / name), "--out", str(folder / family)])
        assert r.exit_code == 0, r.output
    return folder / "echoprime", folder / "echoprime-view"


# --- SurgVLP / HecVL / PeskaVLP (surgvlp/codes/models/backbones, tests/config_*.py) -----------
class SurgVLPReferenceImage(nn.Module):
    """SurgVLP's ImageEncoder (img_backbones.py): ResNet-50 trunk, avg pool, Linear(2048, 768)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.model = resnet50(weights=None)  # the reference keeps its fc keys in the file but never uses it
        self.global_embedder = nn.Linear(2048, 768)

    def forward(self, x):
        m = self.model
        x = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
        return self.global_embedder(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def surgvlp_reference_text(bert, idxtoword, ids, mask):
    """BertEncoder.forward with text_last_n_layers=4, text_agg_tokens=True, text_aggregate_method='sum'."""
    hidden = bert(ids, mask, output_hidden_states=True).hidden_states
    emb = torch.stack(hidden[-4:]).permute(1, 0, 2, 3)  # batch, layers, words, dim
    _, n_layers, n_words, dim = emb.shape
    batch = []
    for embs, caption in zip(emb.permute(0, 2, 1, 3), ids):
        agg, bank = [], []
        for word_emb, word_id in zip(embs, caption):
            word = idxtoword[word_id.item()]
            if word == "[SEP]":
                agg.append(torch.stack(bank).sum(0))
                agg.append(word_emb)
                break
            if not word.startswith("##"):
                if bank:
                    agg.append(torch.stack(bank).sum(0))
                bank = [word_emb]
            else:
                bank.append(word_emb)
        agg = torch.stack(agg)
        batch.append(torch.cat([agg, torch.zeros(n_words - len(agg), n_layers, dim)]))
    emb = torch.stack(batch).permute(0, 2, 1, 3)
    return emb.mean(2).sum(1)


def surgvlp_checkpoint(tmp_path, seed: int = 2):
    """A SurgVLP checkpoint in the publisher's layout (random weights) at ``tmp_path/SurgVLP.pth``, with the
    reference image network and BERT it holds."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                     intermediate_size=256, max_position_embeddings=128)
    image = random_weights(SurgVLPReferenceImage, seed)
    torch.manual_seed(seed)
    bert = BertModel(cfg).eval()  # the reference's AutoModel keeps its pooler
    state = {f"backbone_img.{k}": v for k, v in image.state_dict().items()}
    state |= {f"backbone_text.model.{k}": v for k, v in bert.state_dict().items()}
    state["backbone_text.model.embeddings.position_ids"] = torch.arange(128)[None]  # transformers 4.30 saves it
    path = tmp_path / "SurgVLP.pth"
    torch.save(state, path)
    return path, image, bert
