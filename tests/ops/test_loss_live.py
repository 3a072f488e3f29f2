"""Every detection loss against the ``ultralytics`` package, live, on random targets: the package builds a model
from the YAML, yolotr builds it too and loads the package's ``state_dict`` by name, both run the same batch in
training mode, and the totals and items agree to 1e-4 relative. The targets cover what the recorded oracles do
not: no boxes, one image holding every box, duplicated boxes, boxes of a few pixels and boxes almost the
size of the image, 1, 3 and 80 classes, non-square inputs. RT-DETR's denoising queries draw from the global
generator in the package's order, so both sides get the same seed before their forward pass.

Skipped without the package (a bench extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import pytest
import torch

from yolotr.models.detection import DetectionModel
from yolotr.ops.loss import build_loss

pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# (classes, batch, (H, W), boxes, kind)
TRIALS = [
    (1, 1, (64, 64), 0, "normal"),
    (3, 2, (96, 160), 5, "one-image"),
    (80, 4, (128, 96), 12, "tiny"),
    (3, 2, (64, 128), 6, "big"),
    (1, 3, (96, 96), 30, "duplicates"),
]


def random_targets(g: torch.Generator, batch: int, n: int, nc: int, kind: str) -> torch.Tensor:
    """``(n, 6)`` ``[image, class, cx, cy, w, h]`` normalized, ordered by image (as both collates give them)."""
    if n == 0:
        return torch.zeros(0, 6)
    image = torch.zeros(n, 1) if kind == "one-image" else torch.randint(0, batch, (n, 1), generator=g).float()
    cls = torch.randint(0, nc, (n, 1), generator=g).float()
    low, span = {"tiny": (0.002, 0.02), "big": (0.5, 0.5)}.get(kind, (0.01, 0.6))
    wh = torch.rand(n, 2, generator=g) * span + low
    xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    targets = torch.cat((image, cls, xy, wh), 1)
    if kind == "duplicates":
        targets = torch.cat((targets, targets[: n // 3]))
    return targets[targets[:, 0].argsort(stable=True)]


def _package_items(items) -> torch.Tensor:
    """The package's loss items (a dict by name) in yolotr's order: RT-DETR's named, the others as listed."""
    names = ("giou_loss", "cls_loss", "l1_loss") if "giou_loss" in items else tuple(items)
    return torch.stack([items[k].reshape(()) for k in names])


def _compare(cfg: str, package_class, trial: int, dense: bool | None = None) -> None:
    from ultralytics.cfg import get_cfg

    nc, batch, (h, w), n, kind = TRIALS[trial]
    torch.manual_seed(trial)
    theirs = package_class(cfg, nc=nc, verbose=False)
    theirs.args, theirs.nc = get_cfg(overrides={"epochs": 10}), nc
    ours = DetectionModel(cfg, nc=nc)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.train(), ours.train()
    g = torch.Generator().manual_seed(trial)
    images = torch.rand(batch, 3, h, w, generator=g)
    targets = random_targets(g, batch, n, nc, kind)
    package_batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:], "img": images}
    with torch.no_grad():
        torch.manual_seed(100 + trial)
        total_theirs, items_theirs = theirs.loss(package_batch)
        torch.manual_seed(100 + trial)
        total, items = build_loss(ours, {"epochs": 10}, imgsz=max(h, w), dense=dense)(ours(images, targets), targets)
    items_theirs = _package_items(items_theirs)
    assert float(total) == pytest.approx(float(total_theirs.sum()), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(items, items_theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("trial", range(len(TRIALS)))
@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov10n.yaml", "yolov8n.yaml"])
def test_yolo_losses_equal_the_package_on_random_targets(cfg: str, trial: int) -> None:
    from ultralytics.nn.tasks import DetectionModel as PackageModel

    _compare(cfg, PackageModel, trial)


@pytest.mark.parametrize("trial", range(len(TRIALS)))
@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov8n.yaml"])
def test_the_accelerators_dense_losses_equal_the_package_on_random_targets(cfg: str, trial: int) -> None:
    """The path a GPU takes (targets matched without host reads: ``dense``) on the same cases."""
    from ultralytics.nn.tasks import DetectionModel as PackageModel

    _compare(cfg, PackageModel, trial, dense=True)


@pytest.mark.parametrize("trial", [0, 1, 4])
def test_rtdetr_loss_with_denoising_equals_the_package_on_random_targets(trial: int) -> None:
    from pathlib import Path

    from ultralytics.nn.tasks import RTDETRDetectionModel

    cfg = str(Path(__file__).parents[2] / "bench" / "rtdetr-l-w25.yaml")
    _compare(cfg, RTDETRDetectionModel, trial)
