"""medvid.models: video/text encoders, view classifier, view-informed attention, checkpoints.

Entry points: ``factory.create_model`` (registry in ``configs/models/``),
``checkpoint.load_pretrained`` (any registered model kind) and the importers in ``importers``.
Importing this package registers the built-in model kinds with the checkpoint format.
"""
from medvid.models import aggregate, factory, importers  # noqa: F401  (register the built-in model kinds)
