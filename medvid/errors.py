"""Errors medvid raises on purpose; the CLI prints them as one clear line instead of a traceback."""


class MedvidError(Exception):
    """A user-facing error: bad input, missing file, invalid config."""


class MissingWeightsError(MedvidError):
    """Pretrained weights were asked for but are not available locally (nothing is ever downloaded)."""


class PathRefused(MedvidError):
    """A path read from a table or a request that would leave its data root (``..``, absolute, symlink out)."""
