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


def assert_same_detections(ours, theirs, box_px: float, score_atol: float) -> None:
    """yolotr's ``Results`` and the ``ultralytics`` package's hold the same detections as sets: as many rows,
    sorted scores within ``score_atol``, and every box within ``box_px`` pixels (per coordinate) of a box of
    the same class on the other side, both ways. The package's boxes are clipped to the photo first, as
    yolotr's are (its RT-DETR predictor does not clip)."""
    a = torch.cat((ours.boxes.xyxy, ours.boxes.conf[:, None], ours.boxes.cls[:, None]), 1)
    b = theirs.boxes.data.cpu().float().clone()
    h, w = ours.orig_shape
    b[:, [0, 2]], b[:, [1, 3]] = b[:, [0, 2]].clamp(0, w), b[:, [1, 3]].clamp(0, h)
    assert a.shape == b.shape and len(a) > 0
    torch.testing.assert_close(a[:, 4].sort().values, b[:, 4].sort().values, atol=score_atol, rtol=0)
    gap = (a[:, None, :4] - b[None, :, :4]).abs().amax(-1) + 1e6 * (a[:, None, 5] != b[None, :, 5])
    assert float(gap.amin(1).max()) < box_px and float(gap.amin(0).max()) < box_px


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


@pytest.fixture(autouse=True)
def _torch_deterministic_settings_back():
    """torch's deterministic settings as they were before each test: a test that runs ``Trainer._setup()``
    without ``train()`` (which puts them back itself) would leave them to the tests after it."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    yield
    torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    torch.utils.deterministic.fill_uninitialized_memory = previous[2]


def zeroed_copy(source: Path, target: Path, count: int) -> Path:
    """``target``: ``source`` with ``count`` bytes in its middle set to zero (a damaged download or disk)."""
    data = bytearray(Path(source).read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(count)
    target.write_bytes(bytes(data))
    return target
