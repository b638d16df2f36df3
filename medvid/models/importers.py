"""Importers for published checkpoints the user brings (medvid never downloads or ships them).

Each importer builds the publisher's architecture from torchvision / transformers with no
weights, reads the file with ``torch.load(weights_only=True, map_location="cpu")`` and loads it
strictly: missing keys, unexpected keys and shape mismatches are a ``CheckpointMismatchError``
naming them. Every imported model is a registered model kind: ``model.save_pretrained(dir)``
writes a medvid folder that ``medvid.models.checkpoint.load_pretrained`` reads back. Layouts,
forwards and input contracts follow the publishers' code (``docs/models.md``); the code here is
written from those facts, not copied.

| family | architecture | layout |
|---|---|---|
| EchoPrime video encoder | ``mvit_v2_s``, ``head[-1] = Linear(768, 512)`` | plain state dict |
| EchoPrime text encoder | ``BertForMaskedLM`` (BiomedBERT) + ``text_projection = Linear(768, 512)`` | plain state dict |
| EchoPrime view classifier | ``convnext_base``, ``classifier[-1] = Linear(1024, 11)`` | plain state dict |
| EchoNet-Dynamic EF | ``r2plus1d_18``, ``fc = Linear(512, 1)`` | ``{"state_dict": {"module.*"}, "r2": numpy.float64, ...}`` |
| PanEcho | ConvNeXt-T per frame + 4-layer Transformer + task heads | ``{"weights": {...}}`` |
| SurgVLP / HecVL / PeskaVLP | ResNet-50 + Linear(2048, 768) + BERT | plain state dict |
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvid.errors import MedvidError, MissingWeightsError
from medvid.models.backbones import preprocess_for
from medvid.models.checkpoint import Pretrained, register_kind
from medvid.models.text import TextEncoder, load_tokenizer
from medvid.models.video import masked_mean, resolve_mask
from medvid.transforms.clip import PRESETS, ClipPreprocess
from medvid.transforms.contract import PretrainedCfg
from medvid.vocab import ECHO_VIEWS

ECHOPRIME_EMBED_DIM = 512
ECHOPRIME_NUM_VIEWS = 11
ECHOPRIME_TEXT_LENGTH = 512  # EchoPrime's tokenizer max_length
TOKENIZER_DIR = "text"  # in a saved SurgVLP or EchoPrime (with text encoder) folder: its tokenizer


class CheckpointMismatchError(MedvidError):
    """A checkpoint's keys or shapes do not fit the architecture it claims to be."""


def _numpy_scalar_globals() -> list[Any]:
    """Exactly what unpickling a ``numpy.float64`` needs (``r2`` in EchoNet-Dynamic's files): the scalar
    constructor, under its numpy 2 name and the numpy 1 name the released file was written with,
    ``numpy.dtype`` and the float64 dtype class."""
    from numpy._core.multiarray import scalar

    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.float64))]


def load_weights_only(path: str | Path, numpy_scalars: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``numpy_scalars`` also admits numpy scalars."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals() if numpy_scalars else []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with code objects, truncated file, not a torch file
        raise MedvidError(f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: {e})") from e


def state_dict_of(obj: Any, path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """The state dict in a loaded checkpoint, optionally under ``key``."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointMismatchError(f"{path}: expected the state dict under '{key}', found top-level {found}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path}: not a state dict of tensors")
    return obj


def read_checkpoint(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read ``path`` safely (no pickled code), optionally the state dict under ``key``."""
    return state_dict_of(load_weights_only(path), path, key)


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


def save_tokenizer(tokenizer: Any, bert_config: Any, folder: Path) -> None:
    """``folder/text/``: the tokenizer and the BERT config (``load_tokenizer`` reads a folder with both)."""
    tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    bert_config.save_pretrained(str(folder / TOKENIZER_DIR))


class _Imported(Pretrained, nn.Module):
    """Base of the imported kinds: ``config`` rebuilds the architecture, ``pretrained_cfg`` is the
    publisher's input contract."""

    def __init__(self, config: dict[str, Any] | None = None, pretrained_cfg: PretrainedCfg | None = None):
        super().__init__()
        self.config: dict[str, Any] = dict(config or {})
        self.pretrained_cfg = pretrained_cfg or PretrainedCfg()

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any], folder: Path):
        return cls(**config)

    def preprocess(self) -> ClipPreprocess:
        """The preprocessing ``pretrained_cfg`` records: EchoPrime's exact crop and bicubic resize for
        ``preset: echoprime``, SurgVLP's resize + centre crop for ``preset: surgvlp``, else medvid's ``ClipPreprocess`` (crop, resize, normalise, channel order)."""
        if self.pretrained_cfg.preset == "echoprime":
            return EchoPrimePreprocess()
        if self.pretrained_cfg.preset == "surgvlp":
            return SurgVLPPreprocess(self.pretrained_cfg.input_size or 224)
        return preprocess_for(self.pretrained_cfg)


# --- EchoPrime ------------------------------------------------------------------------------
# The reference's clip: 32 native frames from the start, every 2nd kept (16); each frame cropped to
# the centred square, then 10 % of the side cut from each edge, bicubic resize to 224² (cv2.INTER_CUBIC);
# normalised with the mean/std below (0-255 scale); a loop shorter than 32 frames is padded with zeros
# AFTER normalisation. ``short_clip``: how medvid fills a short loop ("zero_pad_after_norm" = reference).
ECHOPRIME_PRETRAINED_CFG = PretrainedCfg(
    input_size=PRESETS["echoprime"]["size"], num_frames=PRESETS["echoprime"]["num_frames"],
    frame_stride=PRESETS["echoprime"]["frame_stride"], crop=PRESETS["echoprime"]["crop"],
    zoom=PRESETS["echoprime"]["zoom"], mean=PRESETS["echoprime"]["mean"], std=PRESETS["echoprime"]["std"],
    scale="0-255", channel_order="RGB", interpolation="bicubic", short_clip="zero_pad_after_norm", preset="echoprime",
)
ECHOPRIME_SPAN = 32  # native frames the reference reads per clip (16 kept at stride 2)


def _echoprime_frame(frame: np.ndarray, size: int, zoom: float) -> Tensor:
    """One uint8 frame ``(H, W, 3)`` -> float ``(3, size, size)`` on 0-255, as the reference crops and scales."""
    h, w = frame.shape[:2]
    if w > h:
        pad = int(round((w - h) / 2))
        frame = frame[:, pad:w - pad]
    elif h > w:
        pad = int(round((h - w) / 2))
        frame = frame[pad:h - pad]
    if zoom:
        h, w = frame.shape[:2]
        py, px = round(int(h * zoom)), round(int(w * zoom))
        frame = frame[py:h - py, px:w - px]
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return x[0].round().clamp(0, 255)  # cv2 returns uint8 for uint8 input


class EchoPrimePreprocess(ClipPreprocess):
    """The reference's per-frame crop and bicubic resize (``_echoprime_frame``), then normalisation on the
    0-255 scale: what the ``echoprime`` preset (``interpolation: bicubic``) records. Short loops are
    padded by the sampler (``short_clip: zero_pad_after_norm``), not here."""

    def __init__(self) -> None:
        c = ECHOPRIME_PRETRAINED_CFG
        super().__init__(c.input_size, c.crop, c.zoom, c.mean, c.std)

    def from_frames(self, frames: np.ndarray) -> Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        x = torch.stack([_echoprime_frame(f, self.size, self.zoom) for f in frames], 1)
        return (x - self._mean) / self._std

    def __call__(self, clip: Tensor) -> Tensor:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) clip, got {tuple(clip.shape)}")
        return self.from_frames(clip.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy())


def echoprime_clip(frames: np.ndarray, exact: bool = True) -> Tensor:
    """EchoPrime's input ``(3, 16, 224, 224)`` from native uint8 RGB frames ``(T, H, W, 3)`` of one loop.

    ``exact=True`` (the ``echoprime`` preset, what the importer records in ``pretrained_cfg``): the
    reference's crop, bicubic resize, normalisation and zero padding after normalisation for loops
    shorter than 32 frames. ``exact=False``: medvid's default — the same frames with a loop shorter
    than 32 frames wrapped around (cine loops are cyclic) and ``ClipPreprocess``'s area/linear resize.
    """
    c = ECHOPRIME_PRETRAINED_CFG
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    span = frames[:ECHOPRIME_SPAN]
    if not exact:
        idx = np.arange(0, ECHOPRIME_SPAN, c.frame_stride) % len(frames)
        return ClipPreprocess.from_preset("echoprime")(torch.from_numpy(frames[idx]).permute(3, 0, 1, 2).float())
    x = EchoPrimePreprocess().from_frames(span)
    if x.shape[1] < ECHOPRIME_SPAN:
        x = torch.cat([x, x.new_zeros(3, ECHOPRIME_SPAN - x.shape[1], *x.shape[2:])], 1)
    return x[:, ::c.frame_stride]


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


class EchoPrimeTextEncoder(nn.Module):
    """EchoPrime's text encoder (its ``EchoPrimeTextEncoder``): ``backbone`` a BiomedBERT-architecture
    ``BertForMaskedLM`` (sizes from ``bert_config``), ``text_projection`` Linear(768, 512); a text's embedding
    is the projected ``[CLS]`` state of the last layer. The masked-LM head is kept (the file holds it) but
    not run: the last hidden layer is the encoder's output either way."""

    def __init__(self, bert_config: Any):
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        config = BertConfig.from_dict(bert_config) if isinstance(bert_config, dict) else bert_config
        self.backbone = BertForMaskedLM(config)
        self.text_projection = nn.Linear(config.hidden_size, ECHOPRIME_EMBED_DIM)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.backbone.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_projection(hidden[:, 0])


class EchoPrimeVideoEncoder(_Imported):
    """EchoPrime's video encoder: clips ``[B,3,16,224,224]`` (``echoprime_clip``) -> ``[B,512]``.
    ``encode_clips`` gives the unit-norm embedding drafting and report banks use (whole clips in: the
    mViT has no per-frame path). Imported with its text encoder (``text_bert_config`` + a tokenizer),
    ``tokenize``/``encode_text`` embed text in the same 512-d space (findings, text -> study retrieval)."""

    embed_dim = ECHOPRIME_EMBED_DIM

    def __init__(self, text_bert_config: dict[str, Any] | None = None, tokenizer=None):
        super().__init__({"text_bert_config": text_bert_config} if text_bert_config else {}, ECHOPRIME_PRETRAINED_CFG)
        self.model = echoprime_video_encoder()
        self.text = EchoPrimeTextEncoder(text_bert_config) if text_bert_config else None
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any], folder: Path) -> "EchoPrimeVideoEncoder":
        text = config.get("text_bert_config")
        return cls(text, load_tokenizer(folder / TOKENIZER_DIR) if text else None)

    def save_checkpoint_files(self, folder: Path) -> None:
        if self.text is not None:
            save_tokenizer(self.tokenizer, self.text.backbone.config, folder)

    def forward(self, clips: Tensor) -> Tensor:
        return self.model(clips)

    def encode_clips(self, clips: Tensor, normalize: bool = True) -> Tensor:
        out = self.model(clips)
        return F.normalize(out, dim=-1) if normalize else out

    def _text_tower(self) -> EchoPrimeTextEncoder:
        if self.text is None:
            raise MedvidError("this EchoPrime model has no text encoder: import it with "
                              "text_encoder=echo_prime_text_encoder.pt tokenizer_path=BIOMEDBERT_FOLDER")
        return self.text

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, Tensor]:
        """EchoPrime's tokenisation (BiomedBERT tokenizer, truncated at 512 tokens), padded to the longest text
        of the batch rather than to 512: the attention mask hides padding, so the ``[CLS]`` state is the same."""
        self._text_tower()
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length or ECHOPRIME_TEXT_LENGTH,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = True) -> Tensor:
        out = self._text_tower()(input_ids, attention_mask)
        return F.normalize(out, dim=-1) if normalize else out


class EchoPrimeViewClassifier(_Imported):
    """EchoPrime's view classifier: first frames ``[B,3,224,224]`` (or clips ``[B,3,T,224,224]``, whose first
    frame is taken, as the reference does) -> logits over ``labels`` (``medvid.vocab.ECHO_VIEWS``)."""

    def __init__(self):
        super().__init__({}, replace(ECHOPRIME_PRETRAINED_CFG, num_frames=1))
        self.model = echoprime_view_classifier()
        self.labels = list(ECHO_VIEWS)

    def forward(self, frames: Tensor) -> Tensor:
        return self.model(frames[:, :, 0] if frames.ndim == 5 else frames)


register_kind("echoprime_video", EchoPrimeVideoEncoder)
register_kind("echoprime_view", EchoPrimeViewClassifier)


def _import_plain(cls: Callable[[], _Imported], path: str | Path, what: str) -> _Imported:
    model = build_empty(cls)
    load_strict(model.model, read_checkpoint(path), what)
    return model.eval()


def import_echoprime_video_encoder(path: str | Path, text_encoder: str | Path | None = None,
                                   tokenizer_path: str | Path | None = None) -> EchoPrimeVideoEncoder:
    """EchoPrime's ``echo_prime_encoder.pt`` (a plain state dict); with ``text_encoder`` its
    ``echo_prime_text_encoder.pt`` too (``EchoPrimeTextEncoder``'s state dict: ``backbone.*`` a
    ``BertForMaskedLM``, ``text_projection.*``), which needs ``tokenizer_path``: a local folder with the
    BiomedBERT tokenizer (``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``; nothing is downloaded)."""
    if text_encoder is None:
        if tokenizer_path is not None:
            raise MedvidError("tokenizer_path is for EchoPrime's text encoder: pass text_encoder= as well")
        return _import_plain(EchoPrimeVideoEncoder, path, "EchoPrime video encoder")
    if tokenizer_path is None:
        raise MedvidError("text_encoder needs tokenizer_path: a local folder with the BiomedBERT tokenizer "
                          "EchoPrime's text encoder was trained with")
    state = read_checkpoint(text_encoder)
    config = bert_config_from_state(state, "backbone.bert.")
    tokenizer = load_tokenizer(tokenizer_path)
    if len(tokenizer) > config.vocab_size:
        raise CheckpointMismatchError(f"{tokenizer_path}: its tokenizer has {len(tokenizer)} tokens, more than the "
                                      f"{config.vocab_size} of the text encoder's BERT: not the tokenizer it was trained with")
    model = _import_plain(lambda: EchoPrimeVideoEncoder(config.to_dict(), tokenizer), path, "EchoPrime video encoder")
    load_strict(model.text, state, "EchoPrime text encoder", ignore=("embeddings.position_ids",))
    return model.eval()


def import_echoprime_view_classifier(path: str | Path) -> EchoPrimeViewClassifier:
    """EchoPrime's ``view_classifier.pt`` (a plain state dict); logits in ``ECHO_VIEWS`` order."""
    return _import_plain(EchoPrimeViewClassifier, path, "EchoPrime view classifier")


# --- EchoNet-Dynamic ------------------------------------------------------------------------

def echonet_dynamic_ef() -> nn.Module:
    """torchvision R(2+1)D-18 with a 1-output EF regression head; input 32 frames (period 2) at 112²."""
    from torchvision.models.video import r2plus1d_18

    model = r2plus1d_18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model


class EchoNetDynamic(_Imported):
    """EchoNet-Dynamic's EF regressor: clips ``[B,3,32,112,112]`` (RGB, normalised with the training
    split's per-channel mean/std on 0-255) -> EF in % ``[B,1]``."""

    def __init__(self, pretrained_cfg: PretrainedCfg | None = None):
        super().__init__({}, pretrained_cfg)  # the contract is saved as pretrained_cfg
        self.model = echonet_dynamic_ef()

    def forward(self, clips: Tensor) -> Tensor:
        return self.model(clips)


register_kind("echonet_dynamic", EchoNetDynamic)


def _channel_stats(values: Sequence[float] | None, name: str) -> list[float]:
    if values is None or len(values) != 3:
        raise MedvidError(
            f"EchoNet-Dynamic needs {name}=[r, g, b] (0-255 scale): the file does not store the training split's "
            "mean/std; compute them on the training videos as EchoNet-Dynamic does (docs/models.md)")
    return [float(v) for v in values]


def import_echonet_dynamic(path: str | Path, mean: Sequence[float] | None = None,
                           std: Sequence[float] | None = None) -> EchoNetDynamic:
    """EchoNet-Dynamic's ``best.pt``/``r2plus1d_18_32_2_pretrained.pt``: a dict saved by its training script
    (``state_dict`` with DataParallel ``module.`` prefixes, ``epoch``, ``opt_dict``, ``scheduler_dict``,
    ``period``, ``frames``, ``best_loss``, ``loss``, ``r2`` as ``numpy.float64``). ``mean``/``std``
    (per RGB channel, 0-255) are required: the file does not hold them."""
    mean, std = _channel_stats(mean, "mean"), _channel_stats(std, "std")
    obj = load_weights_only(path, numpy_scalars=True)
    state = strip_prefix(state_dict_of(obj, path, "state_dict"), "module.")
    contract = PretrainedCfg(input_size=112, num_frames=int(obj.get("frames", 32)),
                             frame_stride=int(obj.get("period", 2)), crop="none", zoom=0.0, mean=mean, std=std,
                             scale="0-255", channel_order="RGB", output="EF (%)")
    model = build_empty(lambda: EchoNetDynamic(contract))
    load_strict(model.model, state, "EchoNet-Dynamic EF model")
    return model.eval()


# --- PanEcho --------------------------------------------------------------------------------
# Task types as PanEcho defines them (its task table): 1-output binary tasks get a sigmoid, and the
# 7 below are reported as 1 - sigmoid (the probability of the abnormal class); multi-output tasks
# get a softmax; the remaining 1-output tasks are regressions (identity).
PANECHO_BINARY_TASKS = frozenset({
    "pericardial-effusion", "LVWallThickness-increased-any", "LVWallThickness-increased-modsev",
    "LVWallMotionAbnormalities", "RVSystolicFunction", "RASize", "AVStructure", "LVOT20mmHg", "MVStenosis",
    "RAP-8-or-higher",
})
PANECHO_INVERTED_TASKS = frozenset({
    "MVStenosis", "AVStructure", "RASize", "RVSystolicFunction", "LVWallThickness-increased-modsev",
    "LVWallThickness-increased-any", "pericardial-effusion",
})
TASK_TYPES = ("binary", "multiclass", "regression")
# PanEcho's input: frames as OpenCV reads them (BGR), scaled to 0-1 and normalised with ImageNet's
# mean/std applied in that channel order, centre crop 224 (no resize), 16 consecutive frames.
PANECHO_PRETRAINED_CFG = PretrainedCfg(
    input_size=224, num_frames=16, frame_stride=1, crop="center_square", zoom=0.0,
    reference_crop="center crop 224x224 of the native frame (no resize)",
    mean=PRESETS["imagenet"]["mean"], std=PRESETS["imagenet"]["std"], scale="0-255", channel_order="BGR",
)


def panecho_task_types(head_sizes: dict[str, int]) -> dict[str, str]:
    """Each task's type from its head size and PanEcho's task table."""
    return {t: "multiclass" if n > 1 else "binary" if t in PANECHO_BINARY_TASKS else "regression"
            for t, n in head_sizes.items()}


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
        """``[B,3,L,H,W]`` reshaped to ``[B*L,3,H,W]`` *without* moving the time axis first, as PanEcho
        was trained (each "frame" mixes channels of neighbouring frames; the weights expect exactly that)."""
        b, c, t, h, w = clips.shape
        feats = self.encoder(clips.reshape(b * t, c, h, w)).reshape(b, t, -1)
        return self.transformer(self.time_encoder(feats)).mean(1)


class PanEcho(_Imported):
    """PanEcho: video encoder + one ``<task>_head`` (Dropout, Linear) per task; ``forward -> {task: output}``.

    With ``activations`` (default, as PanEcho) binary tasks are probabilities of the positive class
    (sigmoid; ``1 - sigmoid`` for ``PANECHO_INVERTED_TASKS``), multi-class tasks softmax probabilities
    and regressions raw values; without, every head's raw output.
    """

    def __init__(self, head_sizes: dict[str, int], task_types: dict[str, str] | None = None, layers: int = 4,
                 heads: int = 8, clip_len: int = 16, activations: bool = True):
        task_types = {**panecho_task_types(head_sizes), **(task_types or {})}
        if bad := {t: v for t, v in task_types.items() if v not in TASK_TYPES or t not in head_sizes}:
            raise MedvidError(f"PanEcho task types must be one of {TASK_TYPES} for tasks in the file, got {bad}")
        super().__init__({"head_sizes": dict(head_sizes), "task_types": task_types, "layers": layers, "heads": heads,
                          "clip_len": clip_len, "activations": activations}, PANECHO_PRETRAINED_CFG)
        self.encoder = PanEchoVideoEncoder(layers, heads, clip_len)
        self.tasks = list(head_sizes)
        self.task_types = task_types
        self.activations = activations
        for task, n in head_sizes.items():
            self.add_module(f"{task}_head", nn.Sequential(nn.Dropout(0.25), nn.Linear(self.encoder.out_dim, n)))

    def _activate(self, task: str, y: Tensor) -> Tensor:
        kind = self.task_types[task]
        if kind == "multiclass":
            return y.softmax(1)
        if kind == "binary":
            return 1 - torch.sigmoid(y) if task in PANECHO_INVERTED_TASKS else torch.sigmoid(y)
        return y

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        x = self.encoder(clips)
        out = {}
        for task in self.tasks:
            y = self.get_submodule(f"{task}_head")(x)
            out[task] = self._activate(task, y) if self.activations else y
        return out


register_kind("panecho", PanEcho)


def import_panecho(path: str | Path, task_types: dict[str, str] | None = None) -> PanEcho:
    """PanEcho checkpoint (state dict under ``weights``); the task heads are read from the file, their types
    from PanEcho's task table (``task_types`` overrides, e.g. for a fine-tuned head)."""
    state = read_checkpoint(path, key="weights")
    heads = {k[: -len("_head.1.weight")]: int(v.shape[0]) for k, v in state.items() if k.endswith("_head.1.weight")}
    layers = len({k.split(".")[3] for k in state if k.startswith("encoder.transformer.layers.")})
    clip_len = int(state["encoder.time_encoder.pe"].shape[1]) if "encoder.time_encoder.pe" in state else 16
    model = build_empty(lambda: PanEcho(heads, task_types, layers=layers or 4, clip_len=clip_len))
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


# SurgVLP's frame preprocessing (its ``_transform`` and test configs, on PIL images): Resize((360, 640))
# (bilinear, antialiased, aspect ratio not kept), CenterCrop(224), ToTensor (÷255), ImageNet mean/std, RGB.
# ``preset: surgvlp`` makes ``model.preprocess()`` exactly that (``SurgVLPPreprocess``); crop/zoom describe
# the same region for medvid's ``ClipPreprocess`` on 16:9 frames (centred square shrunk to 224/360).
SURGVLP_RESIZE = (360, 640)
IMAGENET_MEAN_01, IMAGENET_STD_01 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SURGVLP_PRETRAINED_CFG = PretrainedCfg(
    input_size=224, num_frames=4, crop="center_square", zoom=round((1 - 224 / 360) / 2, 4),
    reference_crop="resize to 360x640 (bilinear), centre crop 224", interpolation="bilinear", preset="surgvlp",
    mean=PRESETS["imagenet"]["mean"], std=PRESETS["imagenet"]["std"], scale="0-255", channel_order="RGB",
    max_text_length=77,
)


class SurgVLPPreprocess(ClipPreprocess):
    """SurgVLP's frame preprocessing, value for value: each uint8 RGB frame resized by Pillow to 360×640
    (bilinear, what torchvision's ``Resize`` does to a PIL image), centre crop ``size`` (torchvision's
    rounding), then ``x / 255`` and ImageNet mean/std in float32 as ``ToTensor`` + ``Normalize`` compute it
    (one lookup table per channel holds those values)."""

    def __init__(self, size: int = 224) -> None:
        super().__init__(size, "center_square", 0.0, PRESETS["imagenet"]["mean"], PRESETS["imagenet"]["std"])
        h, w = SURGVLP_RESIZE
        if not 0 < self.size <= h:
            raise ValueError(f"SurgVLP crops {self.size} from a {h}x{w} frame: size must be in 1..{h}")
        self._top, self._left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        levels = torch.arange(256, dtype=torch.float32).div(255)
        mean, std = torch.tensor(IMAGENET_MEAN_01), torch.tensor(IMAGENET_STD_01)
        self._lut = ((levels[None] - mean[:, None]) / std[:, None]).numpy()

    def geometry(self, height: int, width: int) -> dict[str, tuple]:
        sy, sx = SURGVLP_RESIZE[0] / height, SURGVLP_RESIZE[1] / width
        y0, x0 = self._top / sy, self._left / sx
        return {"crop_box": (x0, y0, x0 + self.size / sx, y0 + self.size / sy), "scale": (sx, sy)}

    def from_frames(self, frames: np.ndarray) -> Tensor:
        from PIL import Image

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        (h, w), s = SURGVLP_RESIZE, self.size
        out = np.empty((3, len(frames), s, s), dtype=np.float32)
        for i, f in enumerate(frames):
            small = np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((w, h), Image.Resampling.BILINEAR))
            crop = small[self._top:self._top + s, self._left:self._left + s]
            for c in range(3):
                np.take(self._lut[c], crop[..., c], out=out[c, i])
        return torch.from_numpy(out)

    def __call__(self, clip: Tensor) -> Tensor:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) clip, got {tuple(clip.shape)}")
        return self.from_frames(clip.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy())


class SurgVLPModel(_Imported):
    """SurgVLP / HecVL / PeskaVLP: frames -> ResNet-50 -> 2048->768, mean over frames; text: BERT with the
    reference pooling (``TextEncoder`` pooling ``surgvlp``: 77 tokens, positions after ``[SEP]`` zeroed,
    mean over positions, last 4 layers summed). Same ``encode_*`` methods as ``VideoTextModel``."""

    def __init__(self, bert_config, tokenizer=None, temperature: float = 0.1, text_pooler: bool = True):
        from transformers import BertConfig, BertModel

        if isinstance(bert_config, dict):
            bert_config = BertConfig.from_dict(bert_config)
        super().__init__({"bert_config": bert_config.to_dict(), "temperature": temperature,
                          "text_pooler": text_pooler}, SURGVLP_PRETRAINED_CFG)
        self.backbone_img = _SurgVLPImage(bert_config.hidden_size)
        self.embed_dim = bert_config.hidden_size
        bert = BertModel(bert_config, add_pooling_layer=text_pooler)
        self.backbone_text = TextEncoder(bert, tokenizer, pooling="surgvlp", last_n=4, max_length=77)
        self.register_buffer("logit_scale", torch.tensor(math.log(1 / temperature)), persistent=False)

    @classmethod
    def from_checkpoint_config(cls, config: dict[str, Any], folder: Path) -> "SurgVLPModel":
        tok = folder / TOKENIZER_DIR
        return cls(config["bert_config"], load_tokenizer(tok) if tok.is_dir() else None,
                   config["temperature"], config["text_pooler"])

    def save_checkpoint_files(self, folder: Path) -> None:
        if self.backbone_text.tokenizer is not None:
            save_tokenizer(self.backbone_text.tokenizer, self.backbone_text.model.config, folder)

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


register_kind("surgvlp", SurgVLPModel)


def import_surgvlp(path: str | Path, tokenizer_path: str | Path | None = None,
                   num_attention_heads: int | None = None) -> SurgVLPModel:
    """SurgVLP, HecVL or PeskaVLP checkpoint (same layout). BERT sizes are read from the file
    (attention heads default to hidden/64, as in BERT-base); ``tokenizer_path`` is a local folder
    with the matching tokenizer (e.g. Bio_ClinicalBERT). A ResNet ``fc`` in the file is unused."""
    state = read_checkpoint(path)
    state = {k: v for k, v in state.items() if not k.startswith("backbone_img.model.fc.")}
    config = bert_config_from_state(state, "backbone_text.model.", num_attention_heads)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
    has_pooler = any(k.startswith("backbone_text.model.pooler.") for k in state)
    model = SurgVLPModel(config, tokenizer, text_pooler=has_pooler)
    return load_strict(model, state, "SurgVLP", ignore=("embeddings.position_ids",))


# ``medvid import FAMILY SRC``: family -> importer (keyword options: tokenizer_path, text_encoder, mean, std,
# task_types).
IMPORTERS: dict[str, Callable[..., nn.Module]] = {
    "echoprime": import_echoprime_video_encoder,
    "echoprime-view": import_echoprime_view_classifier,
    "echonet": import_echonet_dynamic,
    "panecho": import_panecho,
    "surgvlp": import_surgvlp,
    "hecvl": import_surgvlp,
    "peskavlp": import_surgvlp,
}
