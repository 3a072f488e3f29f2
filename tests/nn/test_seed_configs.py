"""Users' published configs build verbatim into the model they trained; shipped transformer configs train under AMP.

Reference: ``shared/reference/seed-configs/`` (parameter counts, layer lists, ``state_dict`` keys and
shapes made with the published block code inside the official YOLOv5 builder, and numerical oracles of
the published ``SwinV2_CSPB``).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from tests.conftest import shared_path
from yolotr.models.detection import DetectionModel
from yolotr.nn.swin import SwinV2_CSPB, relative_coords_table, relative_position_index

SEEDS = {"yolov5_swin_transfomrer": 12_817_253, "yolov5s-transformerc3": 7_434_301}
CONSTANT_TABLES = ("relative_coords_table", "relative_position_index")  # non-persistent buffers here
SHIPPED = [f"yolov5{s}-{v}" for s in "ns" for v in ("c3tr", "transformerc3", "swinv2", "hwd")]
IMAGE_SIZES = [(320, 320), (352, 352), (416, 416), (384, 640), (640, 640)]


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(shared_path("reference", "seed-configs", "seed_configs_reference.json").read_text())["models"]


@pytest.fixture(scope="module")
def seed_models() -> dict[str, DetectionModel]:
    folder = shared_path("reference", "seed-configs")
    return {name: DetectionModel(folder / f"{name}.yaml") for name in SEEDS}


@pytest.mark.parametrize("name", list(SEEDS))
def test_seed_config_builds_verbatim_with_the_reference_count(name, reference, seed_models):
    model = seed_models[name]
    ref = reference[name]
    assert sum(p.numel() for p in model.parameters()) == ref["params"] == SEEDS[name]
    ours = []
    for m in model.model:
        kind = type(m).__name__
        if isinstance(m, nn.Sequential):
            kind = f"Sequential x{len(m)} of {type(m[0]).__name__}"
        ours.append(f"{m.i}: {kind}")
    assert ours == ref["layers"]


@pytest.mark.parametrize("name", list(SEEDS))
def test_every_reference_key_loads_by_name(name, reference, seed_models):
    model = seed_models[name]
    own = model.state_dict()
    ref = reference[name]["state_dict"]
    skipped = {k for k in ref if k.rsplit(".", 1)[-1] in CONSTANT_TABLES}
    assert {k for k in ref if k not in own} == skipped
    assert [k for k in own if k not in ref] == []
    for key, shape in ref.items():
        if key not in skipped:
            assert list(own[key].shape) == shape, key
    # a checkpoint of the tutorial's model (constant tables included) loads strictly
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in ref.items():
        if key.endswith("relative_coords_table"):
            state[key] = relative_coords_table(7)
        elif key.endswith("relative_position_index"):
            state[key] = relative_position_index(7)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.randn(shape, generator=g)
    model.load_state_dict(state, strict=True)
    key = next(k for k in ref if k not in skipped and k.endswith("weight"))
    assert torch.equal(model.state_dict()[key], state[key])


ORACLES = {
    "swinv2_cspb_n2_128": lambda: SwinV2_CSPB(128, 128, n=2),
    "swinv2_cspb_x3_256": lambda: nn.Sequential(*(SwinV2_CSPB(256, 256) for _ in range(3))),
}


@pytest.mark.parametrize("name", list(ORACLES))
def test_swinv2_cspb_reproduces_the_published_block(name):
    data = torch.load(shared_path("reference", "seed-configs", f"{name}.pt"), weights_only=True)
    module = ORACLES[name]().eval()
    for key, value in data["state_dict"].items():  # the published constant tables are ours
        if key.endswith(CONSTANT_TABLES[0]):
            torch.testing.assert_close(value, relative_coords_table(7), atol=1e-6, rtol=0)
        elif key.endswith(CONSTANT_TABLES[1]):
            assert torch.equal(value, relative_position_index(7))
    module.load_state_dict(data["state_dict"], strict=True)
    sizes = [k.removeprefix("input_") for k in data if k.startswith("input_")]
    assert len(sizes) >= 4
    with torch.no_grad():
        for size in sizes:
            out = module(data[f"input_{size}"])
            torch.testing.assert_close(out, data[f"output_{size}"], atol=1e-5, rtol=1e-5, msg=size)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_trains_a_step_under_bf16_autocast(name):
    """Forward + backward in bf16 autocast: finite outputs and gradients; eval outputs within 5% of fp32's range."""
    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml", nc=2)
    x = torch.rand(2, 3, 128, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = sum(o.float().sigmoid().mean() for o in out)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in out)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        ref = model(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)[0].float()
    assert torch.isfinite(low).all()
    assert (low - ref)[..., 4:].abs().max() <= 0.05  # objectness and class scores (sigmoid outputs)


@pytest.mark.parametrize("name", [s for s in SHIPPED if s.startswith("yolov5n")])
def test_shipped_config_runs_at_every_image_size(name):
    model = DetectionModel(f"{name}.yaml").eval()
    with torch.no_grad():
        for h, w in IMAGE_SIZES:
            decoded, raw = model(torch.zeros(1, 3, h, w))
            assert decoded.shape == (1, 3 * (h * w // 64 + h * w // 256 + h * w // 1024), 85)


def raccoon_batches(root, imgsz: int, batch: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` images of the raccoon train split, letterboxed to ``imgsz`` (pad 114), as training batches.

    Each batch is ``(images (B, 3, imgsz, imgsz) float in [0, 1], targets (N, 6) [image, class, cx, cy, w, h])``.
    """
    import xml.etree.ElementTree as ET

    import cv2
    import numpy as np

    stems = (root / "train.txt").read_text().split()[:count]
    images, targets = [], []
    for i, stem in enumerate(stems):
        img = cv2.imread(str(root / "images" / f"{stem}.jpg"))[:, :, ::-1]
        h, w = img.shape[:2]
        r = imgsz / max(h, w)
        nh, nw = round(h * r), round(w * r)
        top, left = (imgsz - nh) // 2, (imgsz - nw) // 2
        canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
        canvas[top : top + nh, left : left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        images.append(torch.from_numpy(canvas).permute(2, 0, 1).float() / 255)
        for obj in ET.parse(root / "annotations" / f"{stem}.xml").findall("object"):
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            x1, x2 = x1 * r + left, x2 * r + left
            y1, y2 = y1 * r + top, y2 * r + top
            targets.append([i, 0, (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz])
    targets = torch.tensor(targets)
    batches = []
    for start in range(0, len(images) - batch + 1, batch):
        rows = targets[(targets[:, 0] >= start) & (targets[:, 0] < start + batch)].clone()
        rows[:, 0] -= start
        batches.append((torch.stack(images[start : start + batch]), rows))
    return batches


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("YOLOTR_SLOW"), reason="slow (minutes on CPU): set YOLOTR_SLOW=1 to run")
@pytest.mark.parametrize("name", [s for s in SHIPPED if not s.endswith("hwd")])
def test_transformer_config_trains_50_steps_with_finite_loss(name):
    """The stability bar: 50 SGD steps (lr 0.01) at imgsz 256, batch 8, bf16 autocast on CPU, raccoon photos."""
    from yolotr.ops.loss import DetectionLoss

    torch.manual_seed(0)
    batches = raccoon_batches(shared_path("data", "raccoon"), 256, 8, 40)
    model = DetectionModel(f"{name}.yaml", nc=1).train()
    criterion = DetectionLoss(model.model[-1], {}, imgsz=256)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    for step in range(50):
        images, targets = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            raw = model(images)
        loss, items = criterion([r.float() for r in raw], targets)
        assert torch.isfinite(loss), f"{name}: loss {items.tolist()} at step {step}"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
