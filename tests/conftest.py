"""Shared test fixtures: where ``shared/`` lives, and skipping cleanly when it is absent."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("YOLOTR_SHARED", REPO.parent / "shared"))

torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """A path inside ``shared/``; skips the calling test with the reason when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set YOLOTR_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    busy 2-core machine two threads spin-wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared():
    """The ``shared/`` folder (skips when absent)."""
    return shared_path()


@pytest.fixture(autouse=True)
def _yolotr_messages_reach_caplog():
    """Let the ``yolotr`` logger's records reach pytest's capture, whatever an earlier test or import did:
    once yolotr adds its own stderr handler it stops propagating to the root logger (see yolotr/logs.py),
    and ``caplog`` listens at the root."""
    logger = logging.getLogger("yolotr")
    saved = logger.propagate, logger.level
    logger.propagate = True
    yield
    logger.propagate = saved[0]
    logger.setLevel(saved[1])
