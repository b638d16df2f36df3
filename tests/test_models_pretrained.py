"""The offline base weights are really loaded: EfficientNet-Lite0 classifies real photographs,
MiniLM ranks sentences sensibly; missing weights are clear errors, never random init."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models.backbones import (create_backbone, load_by_position, packaged_effnet_lite0_path,
                                     read_state_dict)
from medvid.models.factory import create_model

skimage_data = pytest.importorskip("skimage.data")

# ImageNet-1k indices: 281-285 domestic cats (tabby, tiger, Persian, Siamese, Egyptian);
# 967 espresso, 968 cup, 504 coffee mug, 925 consomme; 657 missile, 744 projectile, 812 space shuttle.
EXPECTED = {
    "chelsea": {281, 282, 283, 284, 285},
    "coffee": {967, 968, 504},
    "rocket": {657, 744, 812},
}


@pytest.fixture(scope="module")
def effnet_imagenet():
    return create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=1000).eval()


def _photo(name: str) -> torch.Tensor:
    """A scikit-image photo as a normalised 224² batch, through the model's own preprocessing."""
    from medvid.models.backbones import preprocess_for
    from medvid.transforms.contract import PretrainedCfg

    img = torch.from_numpy(getattr(skimage_data, name)()).float()  # H,W,3 on 0-255
    clip = img.permute(2, 0, 1).unsqueeze(1)  # (3, 1, H, W)
    cfg = PretrainedCfg(input_size=224, crop="center_square", zoom=0.0, mean=[127.5] * 3, std=[127.5] * 3)
    return preprocess_for(cfg)(clip)[:, 0].unsqueeze(0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_effnet_lite0_classifies_real_photos(effnet_imagenet, name):
    with torch.no_grad():
        probs = effnet_imagenet(_photo(name)).softmax(-1)[0]
    top5 = probs.topk(5)
    top1 = int(top5.indices[0])
    assert top1 in EXPECTED[name], (name, top5.indices.tolist())
    # the expected classes hold a large share of the mass (random weights: ~3/1000)
    assert float(probs[sorted(EXPECTED[name])].sum()) > 0.3


def test_default_model_uses_same_backbone_weights(effnet_imagenet):
    model = create_model()  # the default registry model, pretrained
    ref = effnet_imagenet.state_dict()
    got = model.video.backbone.state_dict()
    assert set(got) <= set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in got)
    assert model.video.feature_dim == 1280 and model.text.out_dim == 384


def test_positional_loader_fails_loudly_on_mismatch():
    source = read_state_dict(packaged_effnet_lite0_path())
    model = create_backbone(pretrained=False, num_classes=1000)
    short = OrderedDict(list(source.items())[:-1])
    with pytest.raises(MedvidError, match="296 in the model"):
        load_by_position(model, short, "test")
    bad = OrderedDict(source)
    key = list(bad)[10]
    bad[key] = torch.zeros(7)
    with pytest.raises(MedvidError, match="tensor #10 shape mismatch"):
        load_by_position(model, bad, "test")


def test_missing_weights_are_errors_not_random_init(tmp_path):
    with pytest.raises(MissingWeightsError, match="backbone_checkpoint"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(MissingWeightsError, match="not found"):
        create_backbone("resnet18", pretrained=True, checkpoint=tmp_path / "nope.pth")
    with pytest.raises(MissingWeightsError, match="text_model_path"):
        create_model({"text_model_path": str(tmp_path)})
    assert create_backbone("resnet18", pretrained=False).num_features == 512


def test_any_timm_backbone_from_local_checkpoint(tmp_path):
    from safetensors.torch import save_file

    src = create_backbone("resnet18", pretrained=False, num_classes=1000)
    save_file(src.state_dict(), str(tmp_path / "r18.safetensors"))
    got = create_backbone("resnet18", pretrained=True, checkpoint=tmp_path / "r18.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        src.eval(), got.eval()
        torch.testing.assert_close(got(x), src.forward_head(src.forward_features(x), pre_logits=True))
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(MedvidError, match="does not fit"):
        create_backbone("resnet18", pretrained=True, checkpoint=tmp_path / "wrong.pth")


def test_minilm_ranks_sentences_by_meaning():
    model = create_model({"temporal": "mean"}).eval()
    with torch.no_grad():
        emb = F.normalize(model.text(**model.tokenize([
            "A cat sits on the mat.", "A kitten is resting on a rug.", "The stock market fell sharply today."])), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_any_hf_text_model_from_local_folder(tmp_path):
    from transformers import BertConfig, BertModel

    from medvid.models.text import default_text_model_path, load_tokenizer

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=128))
    bert.save_pretrained(tmp_path / "tiny-bert")
    load_tokenizer(default_text_model_path()).save_pretrained(str(tmp_path / "tiny-bert"))
    model = create_model({"text_model_path": str(tmp_path / "tiny-bert"), "temporal": "mean", "text_pooling": "cls"})
    assert model.text.out_dim == 64
    got = model.text.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in bert.state_dict().items())
    with torch.no_grad():
        assert model.encode_text(**model.tokenize(["mitral regurgitation"])).shape == (1, 512)
