"""Checkpoints in one place: medvid's format (``medvid.models.checkpoint``) and the importers for
published checkpoints (``medvid.models.importers``), re-exported.

``load_pretrained(dir)`` returns whatever registered kind the folder holds; ``import_*`` read a
publisher's file under ``torch.load(weights_only=True)`` and return a model that saves to the
same format (``model.save_pretrained(dir)``).
"""
from __future__ import annotations

from medvid.models.checkpoint import (  # noqa: F401  (public re-exports)
    is_checkpoint, kind_of, load_pretrained, model_kinds, read_config, register_kind, save_pretrained,
)
from medvid.models.importers import (  # noqa: F401  (public re-exports)
    IMPORTERS, CheckpointMismatchError, import_echonet_dynamic, import_echoprime_video_encoder,
    import_echoprime_view_classifier, import_panecho, import_surgvlp,
)
