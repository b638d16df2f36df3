"""View-informed attention: one study embedding per report section from a study's videos.

For section s and video v, relevance r[s,v] = sum_k P(view k | v) * W[s,k], with W a section x
view table (positive; parametrised as exp of a learnable log-table initialised from the prior in
``configs/section_view_prior.yaml``). Weights are r normalised over the study's real videos;
the section embedding is the weighted sum of video embeddings, L2-normalised. The weights are
returned so the app can show how much each video counted. EchoPrime uses a fixed table; here
it is learnable when ``learnable=True``.

The table is a registered model kind (``view_attention``) of the one checkpoint format: ``medvid pretrain``
saves it as the ``view_attention/`` folder inside the video model's folder (``view_attention_dir``), and
``ViewInformedAttention.from_pretrained(model_dir)`` reads it back.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from medvid.config import config_dir
from medvid.errors import MedvidError
from medvid.models.checkpoint import Pretrained, is_checkpoint, read_config, register_kind
from medvid.models.video import resolve_mask
from medvid.transforms.contract import PretrainedCfg
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

log = logging.getLogger("medvid")

PRIOR_FLOOR = 1e-3  # smallest table entry: no view is ever made impossible
KIND = "view_attention"
# Before the table was a model kind, ``medvid pretrain`` wrote it as two side files in the model folder.
SIDE_WEIGHTS, SIDE_NAMES = "view_attention.safetensors", "view_attention.json"


def view_attention_dir(model_dir: str | Path) -> Path:
    """Where a video model folder keeps its section x view table (a ``view_attention`` model folder)."""
    return Path(model_dir) / KIND


def load_section_view_prior(path: str | Path | None = None, sections: Sequence[str] = ECHO_SECTIONS,
                            views: Sequence[str] = ECHO_VIEWS) -> Tensor:
    """The ``[S,K]`` prior table from YAML (``default`` + ``sections: {name: {view: weight}}``)."""
    path = Path(path) if path else config_dir() / "section_view_prior.yaml"
    if not path.is_file():
        raise MedvidError(f"section x view prior not found: {path}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    default = float(raw.get("default", 0.0))
    table = torch.full((len(sections), len(views)), default)
    given = raw.get("sections") or {}
    unknown = [s for s in given if s not in sections]
    if unknown:
        raise MedvidError(f"{path}: unknown sections {unknown}")
    for s, row in given.items():
        for v, w in (row or {}).items():
            if v not in views:
                raise MedvidError(f"{path}: section '{s}': unknown view '{v}'")
            if float(w) < 0:
                raise MedvidError(f"{path}: section '{s}', view '{v}': weight must be >= 0")
            table[list(sections).index(s), list(views).index(v)] = float(w)
    return table


class ViewInformedAttention(Pretrained, nn.Module):
    """``forward(video_emb [B,V,D], view_probs [B,V,K], video_mask [B,V]) -> (study_emb [B,S,D], weights [B,S,V])``.

    ``config`` names the sections and views (what rebuilds the table's shape); it has no input contract."""

    def __init__(self, section_names: Sequence[str] = ECHO_SECTIONS, view_names: Sequence[str] = ECHO_VIEWS,
                 prior: Tensor | None = None, learnable: bool = True):
        super().__init__()
        self.section_names = list(section_names)
        self.view_names = list(view_names)
        self.config = {"sections": self.section_names, "views": self.view_names}
        self.pretrained_cfg = PretrainedCfg()
        shape = (len(self.section_names), len(self.view_names))
        if prior is None:
            prior = torch.ones(shape)
        prior = torch.as_tensor(prior, dtype=torch.float32)
        if tuple(prior.shape) != shape:
            raise ValueError(f"prior must be [sections, views] = {shape}, got {tuple(prior.shape)}")
        log_table = prior.clamp_min(PRIOR_FLOOR).log()
        if learnable:
            self.log_table = nn.Parameter(log_table)
        else:
            self.register_buffer("log_table", log_table)

    @classmethod
    def from_prior_file(cls, path: str | Path | None = None, learnable: bool = True) -> "ViewInformedAttention":
        """Echo sections x EchoPrime views with the shipped (or given) prior table."""
        return cls(ECHO_SECTIONS, ECHO_VIEWS, load_section_view_prior(path), learnable)

    @classmethod
    def from_checkpoint_config(cls, config: dict, folder: Path) -> "ViewInformedAttention":
        """A frozen table of the saved shape (its values are loaded afterwards)."""
        return cls(config["sections"], config["views"], learnable=False)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, map_location: str | torch.device = "cpu") -> "ViewInformedAttention":
        """The table learned by ``medvid pretrain``, frozen: ``model_dir`` is a video model folder (its
        ``view_attention/``; older folders: ``view_attention.safetensors`` + ``.json``) or the table's own
        folder. The shipped prior, with a warning, when the model folder has none."""
        model_dir = Path(model_dir)
        for folder in (view_attention_dir(model_dir), model_dir):
            if is_checkpoint(folder) and read_config(folder).get("kind") == KIND:
                return super().from_pretrained(folder, map_location)
        if (model_dir / SIDE_WEIGHTS).is_file():
            return cls._from_side_files(model_dir).to(map_location)
        log.warning("%s: no section x view table; using the shipped section x view prior", model_dir)
        return cls.from_prior_file(learnable=False).to(map_location)

    @classmethod
    def _from_side_files(cls, model_dir: Path) -> "ViewInformedAttention":
        """A table saved before it was a model kind: ``view_attention.safetensors`` (``log_table``) + ``.json``
        (``sections``, ``views``)."""
        from safetensors.torch import load_file

        weights, names = model_dir / SIDE_WEIGHTS, model_dir / SIDE_NAMES
        meta = json.loads(names.read_text()) if names.is_file() else {}
        log_table = load_file(str(weights))["log_table"]
        attention = cls(meta.get("sections", ECHO_SECTIONS), meta.get("views", ECHO_VIEWS), learnable=False)
        if tuple(log_table.shape) != tuple(attention.log_table.shape):
            raise MedvidError(f"{weights}: table {tuple(log_table.shape)} does not fit "
                              f"{len(attention.section_names)} sections x {len(attention.view_names)} views")
        attention.log_table.copy_(log_table)
        return attention

    @property
    def table(self) -> Tensor:
        """Current section x view table (positive)."""
        return self.log_table.exp()

    def forward(self, video_emb: Tensor, view_probs: Tensor, video_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, v, _ = video_emb.shape
        if view_probs.shape != (b, v, len(self.view_names)):
            raise ValueError(f"view_probs must be [B,V,K]=({b},{v},{len(self.view_names)}), got {tuple(view_probs.shape)}")
        mask = resolve_mask(video_mask, video_emb, what="video")
        keep = mask.unsqueeze(-1)
        probs = view_probs.masked_fill(~keep, 0.0).to(self.log_table.dtype)
        rel = torch.einsum("bvk,sk->bsv", probs, self.table) * mask.unsqueeze(1)  # padded videos: 0
        weights = rel / rel.sum(-1, keepdim=True).clamp_min(torch.finfo(rel.dtype).tiny)
        emb = video_emb.masked_fill(~keep, 0.0)
        study = torch.einsum("bsv,bvd->bsd", weights.to(emb.dtype), emb)
        return F.normalize(study, dim=-1), weights


register_kind(KIND, ViewInformedAttention)
