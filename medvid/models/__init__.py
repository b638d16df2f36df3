"""medvid.models: video/text encoders, view classifier, view-informed attention, checkpoints.

Entry points: ``factory.create_model`` (registry in ``configs/models/``), ``hub.load_pretrained``.
"""
