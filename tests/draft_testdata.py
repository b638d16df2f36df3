"""Shared bank/draft test data: two tiny random echo models and the ``medvid bank build`` / ``medvid draft``
settings the draft tests (and the app's real-draft test) run with. Not a test module: test files import it by name."""
from __future__ import annotations

from pathlib import Path

from medvid.config import load_config

TINY_VIDEO_TEXT = {"pretrained": False, "input_size": 64, "num_frames": 4, "temporal": "mean", "embed_dim": 32}


def tiny_models(root: Path) -> tuple[Path, Path]:
    """A tiny video-text model with a learned-looking attention table, and a view classifier sharing its backbone."""
    from medvid.models.aggregate import ViewInformedAttention, view_attention_dir
    from medvid.models.factory import create_model, create_view_classifier
    from medvid.utils import seed_everything

    seed_everything(0)
    model = create_model(TINY_VIDEO_TEXT).eval()
    model_dir = model.save_pretrained(root / "model")
    ViewInformedAttention.from_prior_file().save_pretrained(view_attention_dir(model_dir))
    clf = create_view_classifier({"pretrained": False, "input_size": 64}).eval()
    clf.backbone.load_state_dict(model.video.backbone.state_dict())
    return model_dir, clf.save_pretrained(root / "views")


def build_bank(root: Path, model: Path, views: Path, bank: Path, *extra: str) -> dict:
    """``medvid bank build`` of the ingest ``root/ingest`` (DICOM under ``root/synth/dicom``) into ``bank``; every
    sentence kept (``min_patients=1``): these worlds have fewer training patients than the default 5."""
    from medvid.pipelines import bank as job

    return job.run(load_config(job.Config, "bank", None, [
        "action=build", f"input={root / 'ingest'}", f"model={model}", f"views={views}", f"bank={bank}",
        f"dicom_root={root / 'synth' / 'dicom'}", "progress=false", "encoding.num_workers=0", "min_patients=1",
        *extra]))


def draft_cfg(w: dict, out: Path, *extra: str):
    """The ``medvid draft`` config of world ``w`` (``ingest``, ``model``, ``views``, ``bank``, ``dicom``) into ``out``."""
    from medvid.pipelines import draft as job

    return load_config(job.Config, "draft", None, [
        f"input={w['ingest']}", f"model={w['model']}", f"views={w['views']}", f"bank={w['bank']}", f"out={out}",
        f"dicom_root={w['dicom']}", "progress=false", "encoding.num_workers=0", "batch_studies=2", *extra])
