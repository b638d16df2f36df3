"""Fixtures shared by several test files. Plain helpers shared the same way live in helper modules beside the
tests (``echo_testdata``, ``model_testdata``, ``tiny_training``); no test imports another test module."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


def pytest_addoption(parser) -> None:
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite tests/model_goldens.json from the current models (then review its diff)")


@pytest.fixture(scope="session")
def update_goldens(request) -> bool:
    """True under ``--update-goldens``: golden tests write their numbers instead of comparing."""
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Callable[..., Path]:
    """``tiny_model(input_size=64, **config)``: the folder of an untrained video-text model (random init, frames
    averaged over time, nothing downloaded), saved once per session for each distinct config."""
    from medvid.models.factory import create_model
    from medvid.utils import seed_everything

    saved: dict[str, Path] = {}

    def make(input_size: int = 64, **config) -> Path:
        cfg = {"pretrained": False, "input_size": input_size, "temporal": "mean", **config}
        key = repr(sorted(cfg.items()))
        if key not in saved:
            seed_everything(0)
            folder = tmp_path_factory.mktemp("tiny_model")
            saved[key] = create_model(cfg).save_pretrained(folder / "model")
        return saved[key]

    return make
