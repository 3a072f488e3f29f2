"""YOLOv5's loss against the official code (the ``yolov5`` pip package), live, on random targets: both build
yolov5n.yaml with one set of weights, run one batch in training mode, and the loss items and the head's
gradients agree to 1e-4 relative. Covers what the recorded oracles did not: centres on the image's edges
(cx or cy exactly 0 or 1), focal loss (``fl_gamma``), label smoothing, other gains, both matching paths.

Skipped without the package (a bench extra: ``pip install -e .[bench]``, ``yolov5`` with ``--no-deps``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from yolotr.models.detection import DetectionModel
from yolotr.ops.loss import build_loss

yolov5 = pytest.importorskip("yolov5", reason="the official YOLOv5 package is a bench extra (pip install -e .[bench])")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BASE = dict(box=0.05, cls=0.5, cls_pw=1.0, obj=1.0, obj_pw=1.0, anchor_t=4.0, fl_gamma=0.0, label_smoothing=0.0)
NC, BATCH, SIZE = 3, 2, 128


def _targets(seed: int, edges: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = 8
    wh = torch.rand(n, 2, generator=g) * 0.6 + 0.01
    xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    if edges:  # centres on the left, right, top and bottom edges, the box partly outside
        side = torch.arange(n) % 4
        xy[side == 0, 0], xy[side == 1, 0], xy[side == 2, 1], xy[side == 3, 1] = 0.0, 1.0, 0.0, 1.0
    image = torch.randint(0, BATCH, (n, 1), generator=g).float()
    cls = torch.randint(0, NC, (n, 1), generator=g).float()
    targets = torch.cat((image, cls, xy, wh), 1)
    return targets[targets[:, 0].argsort(stable=True)]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize(
    ("edges", "hyp"),
    [
        (True, {}),
        (False, {"fl_gamma": 1.5}),
        (True, {"fl_gamma": 2.0, "cls_pw": 2.0, "obj_pw": 0.5}),
        (False, {"label_smoothing": 0.1, "box": 0.1, "cls": 0.3, "obj": 0.7, "anchor_t": 2.0}),
    ],
    ids=["edges", "focal", "edges-focal-pw", "smoothing-gains"],
)
def test_yolov5_loss_equals_the_official_compute_loss(edges, hyp, dense):
    from yolov5.models.yolo import Model
    from yolov5.utils.loss import ComputeLoss

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = Model(str(Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"), nc=NC)
    ours = DetectionModel("yolov5n.yaml", nc=NC)
    ours.load_state_dict(theirs.state_dict())
    theirs.train(), ours.train()
    settings = {**BASE, **hyp}
    nl = 3  # YOLOv5's train.py scales the gains before ComputeLoss reads them
    theirs.hyp = {
        **settings,
        "box": settings["box"] * 3 / nl,
        "cls": settings["cls"] * NC / 80 * 3 / nl,
        "obj": settings["obj"] * (SIZE / 640) ** 2 * 3 / nl,
    }
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets = _targets(0, edges)
    total, items = ComputeLoss(theirs)(theirs(images), targets.clone())
    total.backward()
    mine, mine_items = build_loss(ours, settings, imgsz=SIZE, dense=dense)(ours(images), targets.clone())
    mine.backward()
    torch.testing.assert_close(mine_items, items.detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(mine.detach(), total.detach().reshape(()), rtol=1e-4, atol=1e-7)
    for name in ("model.24.m.0.weight", "model.24.m.2.bias", "model.0.conv.weight"):
        want = dict(theirs.named_parameters())[name].grad
        got = dict(ours.named_parameters())[name].grad
        assert (got - want).abs().max() <= 1e-4 * want.abs().max(), name
