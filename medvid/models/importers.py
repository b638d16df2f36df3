"""Importers for published checkpoints the user brings (medvid never downloads or ships them).

Each importer builds the publisher's architecture from torchvision / transformers with no
weights, reads the file with ``torch.load(weights_only=True, map_location="cpu")`` and loads it
strictly: missing keys, unexpected keys and shape mismatches are a ``CheckpointMismatchError``
naming them. Layouts follow ``docs/formats.md`` (and, for PanEcho, its published model
definition: key names only; the code here is written from that description).

| family | architecture | layout |
|---|---|---|
| EchoPrime video encoder | ``mvit_v2_s``, ``head[-1] = Linear(768, 512)`` | plain state dict |
| EchoPrime view classifier | ``convnext_base``, ``classifier[-1] = Linear(1024, 11)`` | plain state dict |
| EchoNet-Dynamic EF | ``r2plus1d_18``, ``fc = Linear(512, 1)`` | ``{"state_dict": {"module.*"}}`` |
| PanEcho | ConvNeXt-T per frame + 4-layer Transformer + task heads | ``{"weights": {...}}`` |
| SurgVLP / HecVL / PeskaVLP | ResNet-50 + Linear(2048, 768) + BERT | plain state dict |
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models.text import TextEncoder
from medvid.models.video import masked_mean, resolve_mask
from medvid.transforms.clip import PRESETS

ECHOPRIME_EMBED_DIM = 512
ECHOPRIME_NUM_VIEWS = 11


class CheckpointMismatchError(MedvidError):
    """A checkpoint's keys or shapes do not fit the architecture it claims to be."""


def read_checkpoint(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read ``path`` safely (no pickled code), optionally the state dict under ``key``."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with code objects, truncated file, not a torch file
        raise MedvidError(f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: {e})") from e
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointMismatchError(f"{path}: expected the state dict under '{key}', found top-level {found}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path}: not a state dict of tensors")
    return obj


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove ``prefix`` (e.g. DataParallel's ``module.``) from every key that has it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def build_empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build an architecture on the meta device (no weight init: the checkpoint fills every tensor).

    Falls back to a normal build when the model has non-persistent buffers, which no file holds.
    """
    with torch.device("meta"):
        model = factory()
    if {n for n, _ in model.named_buffers()} - set(model.state_dict()):
        return factory()
    return model


def load_strict(model: nn.Module, state: dict[str, Tensor], what: str, ignore: Iterable[str] = ()) -> nn.Module:
    """Load ``state`` into ``model``; any missing/unexpected key or shape mismatch is an error.

    ``ignore`` lists key suffixes of file entries that carry no weights (e.g. ``position_ids``).
    A model built by ``build_empty`` on the meta device takes the file's tensors as they are.
    """
    ignore = tuple(ignore)
    state = {k: v for k, v in state.items() if not (ignore and k.endswith(ignore))}
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in target.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return f"{len(items)} ({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})"
        raise CheckpointMismatchError(
            f"{what}: checkpoint does not match the architecture: missing {show(missing)}; "
            f"unexpected {show(unexpected)}; shape mismatches {show(shapes)}")
    on_meta = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model.eval()


# --- EchoPrime ------------------------------------------------------------------------------
def echoprime_video_encoder() -> nn.Module:
    """torchvision mViT-v2-S with a 768 -> 512 head: ``[B,3,16,224,224] -> [B,512]`` (no weights)."""
    from torchvision.models.video import mvit_v2_s

    model = mvit_v2_s(weights=None)
    model.head[-1] = nn.Linear(model.head[-1].in_features, ECHOPRIME_EMBED_DIM)
    return model


def echoprime_view_classifier() -> nn.Module:
    """torchvision ConvNeXt-Base with an 11-view head (EchoPrime's coarse views), first frame in."""
    from torchvision.models import convnext_base

    model = convnext_base(weights=None)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, ECHOPRIME_NUM_VIEWS)
    return model


def import_echoprime_video_encoder(path: str | Path) -> nn.Module:
    """The encoder, with ``pretrained_cfg`` describing EchoPrime's preprocessing."""
    model = load_strict(build_empty(echoprime_video_encoder), read_checkpoint(path), "EchoPrime video encoder")
    model.pretrained_cfg = dict(ECHOPRIME_PRETRAINED_CFG)
    return model


def import_echoprime_view_classifier(path: str | Path) -> nn.Module:
    """Outputs logits over ``medvid.vocab.ECHO_VIEWS`` (same order as EchoPrime's release) for the first frame."""
    model = load_strict(build_empty(echoprime_view_classifier), read_checkpoint(path), "EchoPrime view classifier")
    model.pretrained_cfg = dict(ECHOPRIME_PRETRAINED_CFG, num_frames=1)
    return model


# --- EchoNet-Dynamic ------------------------------------------------------------------------
def echonet_dynamic_ef() -> nn.Module:
    """torchvision R(2+1)D-18 with a 1-output EF regression head; input 32 frames (period 2) at 112²."""
    from torchvision.models.video import r2plus1d_18

    model = r2plus1d_18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model


def import_echonet_dynamic(path: str | Path) -> nn.Module:
    state = strip_prefix(read_checkpoint(path, key="state_dict"), "module.")
    return load_strict(build_empty(echonet_dynamic_ef), state, "EchoNet-Dynamic EF model")


# --- PanEcho --------------------------------------------------------------------------------
# Binary heads whose published output is 1 - head(x) (so that it is the probability of "positive").
PANECHO_INVERTED_TASKS = frozenset({
    "MVStenosis", "AVStructure", "RASize", "RVSystolicFunction", "LVWallThickness-increased-modsev",
    "LVWallThickness-increased-any", "pericardial-effusion",
})


class _TorchvisionFrameEncoder(nn.Module):
    """ConvNeXt-T without its last linear layer: ``[N,3,H,W] -> [N,768]`` (keys ``model.*``)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import convnext_tiny

        self.model = convnext_tiny(weights=None)
        self.n_features = self.model.classifier[-1].in_features
        self.model.classifier[-1] = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class _SinusoidalTime(nn.Module):
    """Fixed sin/cos time encoding stored as a (frozen) parameter ``pe [1, T, D]``, as PanEcho saves it."""

    def __init__(self, dim: int, max_len: int = 16):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(pos * freq)
        pe[0, :, 1::2] = torch.cos(pos * freq)
        self.pe = nn.Parameter(pe, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[:, : x.shape[1]]


class PanEchoVideoEncoder(nn.Module):
    """Per-frame ConvNeXt-T, time encoding, 4-layer Transformer (8 heads, FF 768, ReLU), mean over time."""

    def __init__(self, layers: int = 4, heads: int = 8, clip_len: int = 16):
        super().__init__()
        self.encoder = _TorchvisionFrameEncoder()
        dim = self.encoder.n_features
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=0.0, activation="relu",
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.time_encoder = _SinusoidalTime(dim, clip_len)
        self.out_dim = dim

    def forward(self, clips: Tensor) -> Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        feats = self.encoder(frames).reshape(b, t, -1)
        return self.transformer(self.time_encoder(feats)).mean(1)


class PanEcho(nn.Module):
    """PanEcho: video encoder + one ``<task>_head`` (Dropout, Linear) per task; ``forward -> {task: output}``."""

    def __init__(self, head_sizes: dict[str, int], layers: int = 4, heads: int = 8, clip_len: int = 16):
        super().__init__()
        self.encoder = PanEchoVideoEncoder(layers, heads, clip_len)
        self.tasks = list(head_sizes)
        for task, n in head_sizes.items():
            self.add_module(f"{task}_head", nn.Sequential(nn.Dropout(0.25), nn.Linear(self.encoder.out_dim, n)))

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        x = self.encoder(clips)
        out = {}
        for task in self.tasks:
            y = self.get_submodule(f"{task}_head")(x)
            out[task] = 1 - y if task in PANECHO_INVERTED_TASKS else y
        return out


def import_panecho(path: str | Path) -> PanEcho:
    """PanEcho checkpoint (state dict under ``weights``); the task heads are read from the file."""
    state = read_checkpoint(path, key="weights")
    heads = {k[: -len("_head.1.weight")]: int(v.shape[0]) for k, v in state.items() if k.endswith("_head.1.weight")}
    layers = len({k.split(".")[3] for k in state if k.startswith("encoder.transformer.layers.")})
    clip_len = int(state["encoder.time_encoder.pe"].shape[1]) if "encoder.time_encoder.pe" in state else 16
    model = build_empty(lambda: PanEcho(heads, layers=layers or 4, clip_len=clip_len))
    return load_strict(model, state, "PanEcho")


# --- SurgVLP family -------------------------------------------------------------------------
def bert_config_from_state(state: dict[str, Tensor], prefix: str, num_attention_heads: int | None = None):
    """A ``BertConfig`` whose sizes are read off the checkpoint's tensor shapes (base or any size)."""
    from transformers import BertConfig

    def shape(key: str) -> tuple[int, ...]:
        if prefix + key not in state:
            raise CheckpointMismatchError(f"BERT weights missing '{prefix + key}'")
        return tuple(state[prefix + key].shape)

    vocab, hidden = shape("embeddings.word_embeddings.weight")
    layers = len({k[len(prefix):].split(".")[2] for k in state if k.startswith(prefix + "encoder.layer.")})
    return BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=num_attention_heads or max(1, hidden // 64),
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=shape("embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("embeddings.token_type_embeddings.weight")[0],
    )


class _SurgVLPImage(nn.Module):
    def __init__(self, embed_dim: int = 768):
        super().__init__()
        from torchvision.models import resnet50

        self.model = resnet50(weights=None)
        self.model.fc = nn.Identity()
        self.global_embedder = nn.Linear(2048, embed_dim)

    def forward(self, frames: Tensor) -> Tensor:
        return self.global_embedder(self.model(frames))


# SurgVLP's frame preprocessing: resize to 360x640, centre crop 224, ImageNet normalisation. For
# 16:9 frames that is the centred square shrunk to 224/360 of its side: zoom (1 - 224/360) / 2.
SURGVLP_PRETRAINED_CFG = {
    "input_size": 224, "num_frames": 4, "crop": "center_square", "zoom": round((1 - 224 / 360) / 2, 4),
    "mean": list(PRESETS["imagenet"]["mean"]), "std": list(PRESETS["imagenet"]["std"]), "scale": "0-255",
}
ECHOPRIME_PRETRAINED_CFG = {
    "input_size": PRESETS["echoprime"]["size"], "num_frames": PRESETS["echoprime"]["n_frames"],
    "crop": PRESETS["echoprime"]["crop"], "zoom": PRESETS["echoprime"]["zoom"],
    "mean": list(PRESETS["echoprime"]["mean"]), "std": list(PRESETS["echoprime"]["std"]), "scale": "0-255",
}


class SurgVLPModel(nn.Module):
    """SurgVLP / HecVL / PeskaVLP: frames -> ResNet-50 -> 2048->768, mean over frames; text: BERT,
    mean of the last 4 hidden layers over all 77 positions (padding included, as the reference
    computes it). Same ``encode_*`` methods and ``pretrained_cfg`` as ``VideoTextModel``."""

    def __init__(self, bert_config, tokenizer=None, temperature: float = 0.1, text_pooler: bool = True):
        super().__init__()
        from transformers import BertModel

        self.backbone_img = _SurgVLPImage(bert_config.hidden_size)
        bert = BertModel(bert_config, add_pooling_layer=text_pooler)
        self.backbone_text = TextEncoder(bert, tokenizer, pooling="last_n_mean", last_n=4, max_length=77,
                                         mean_over_padding=True)
        self.pretrained_cfg = dict(SURGVLP_PRETRAINED_CFG)
        self.register_buffer("logit_scale", torch.tensor(math.log(1 / temperature)), persistent=False)

    def encode_frames(self, frames: Tensor) -> Tensor:
        return self.backbone_img(frames)

    def encode_video_from_features(self, feats: Tensor, frame_mask: Tensor | None = None,
                                   normalize: bool = True) -> Tensor:
        out = masked_mean(feats, resolve_mask(frame_mask, feats))
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_video(self, clips: Tensor, frame_mask: Tensor | None = None, normalize: bool = True) -> Tensor:
        b, c, t, h, w = clips.shape
        feats = self.encode_frames(clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)).reshape(b, t, -1)
        return self.encode_video_from_features(feats, frame_mask, normalize)

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, Tensor]:
        if self.backbone_text.tokenizer is None:
            raise MedvidError("no tokenizer: pass tokenizer_path (the BERT folder the checkpoint was trained with)")
        return self.backbone_text.tokenize(texts, max_length)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = True) -> Tensor:
        out = self.backbone_text(input_ids, attention_mask)
        return nn.functional.normalize(out, dim=-1) if normalize else out


def import_surgvlp(path: str | Path, tokenizer_path: str | Path | None = None,
                   num_attention_heads: int | None = None) -> SurgVLPModel:
    """SurgVLP, HecVL or PeskaVLP checkpoint (same layout). BERT sizes are read from the file
    (attention heads default to hidden/64, as in BERT-base); ``tokenizer_path`` is a local folder
    with the matching tokenizer (e.g. Bio_ClinicalBERT). A ResNet ``fc`` in the file is unused."""
    state = read_checkpoint(path)
    state = {k: v for k, v in state.items() if not k.startswith("backbone_img.model.fc.")}
    config = bert_config_from_state(state, "backbone_text.model.", num_attention_heads)
    tokenizer = None
    if tokenizer_path is not None:
        from medvid.models.text import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_path)
    has_pooler = any(k.startswith("backbone_text.model.pooler.") for k in state)
    model = SurgVLPModel(config, tokenizer, text_pooler=has_pooler)
    return load_strict(model, state, "SurgVLP", ignore=("embeddings.position_ids",))


IMPORTERS: dict[str, Any] = {
    "echoprime-video": import_echoprime_video_encoder,
    "echoprime-view": import_echoprime_view_classifier,
    "echonet-dynamic": import_echonet_dynamic,
    "panecho": import_panecho,
    "surgvlp": import_surgvlp,
    "hecvl": import_surgvlp,
    "peskavlp": import_surgvlp,
}
