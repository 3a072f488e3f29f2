"""Every detection YAML the ``ultralytics`` package ships, live against the package: yolotr builds it with the
package's ``state_dict`` keys and shapes, loads the package's weights by name and gives the same head inputs and
(for the NMS heads) the same eval outputs, also after ``fuse()``, with BatchNorm statistics of the input
(``calibrate_batch_norm``: a fresh model's deep features vanish in eval mode); a checkpoint written by the package's
``save()`` imports without the package. Large models (over 30M parameters) are checked for keys and shapes only.

Skipped without the package (a bench extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.head_inputs import calibrate_batch_norm, head_inputs
from yolotr.models.detection import DetectionModel

ultralytics = pytest.importorskip(
    "ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])"
)
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PACKAGE_CFG = Path(ultralytics.__file__).parent / "cfg" / "models"
OTHER_TASKS = ("-cls", "-seg", "-pose", "-obb", "yoloe", "-world", "-depth", "-sem")
YAMLS = sorted(
    p.relative_to(PACKAGE_CFG).as_posix()
    for p in PACKAGE_CFG.glob("*/*.yaml")
    if not any(task in p.name for task in OTHER_TASKS)
)
BIG = 30_000_000


def _package_model(path: Path, nc: int):
    from ultralytics.nn.tasks import DetectionModel as PackageModel
    from ultralytics.nn.tasks import RTDETRDetectionModel, yaml_model_load

    cfg = yaml_model_load(path)
    if cfg.get("scales"):
        cfg["scale"] = "n" if "n" in cfg["scales"] else next(iter(cfg["scales"]))
    kind = RTDETRDetectionModel if "RTDETRDecoder" in str(cfg["head"][-1]) else PackageModel
    return kind(cfg, nc=nc, verbose=False), cfg


def _first(out):
    return out[0] if isinstance(out, tuple | list) else out


def _like(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """yolotr's anchor-free eval output is ``(B, anchors, 4 + nc)``, the package's ``(B, 4 + nc, anchors)``."""
    return got if got.shape == expected.shape else got.transpose(1, 2)


@pytest.mark.parametrize("name", YAMLS)
def test_package_yaml_keys_weights_and_outputs(name):
    torch.manual_seed(0)
    theirs, cfg = _package_model(PACKAGE_CFG / name, nc=3)
    ours = DetectionModel({k: v for k, v in cfg.items() if k != "yaml_file"}, nc=3)
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    if sum(p.numel() for p in theirs.parameters()) > BIG:
        return
    x = torch.rand(2, 3, 128, 192)
    calibrate_batch_norm(theirs, x)  # features of order 1 at every level, as in a trained model
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    x = x[:1]
    with torch.no_grad():
        inputs = [head_inputs(model, x) for model in (theirs, ours)]
        for expected, got in zip(*inputs, strict=True):
            assert expected.abs().amax() > 0.1  # not vanished: the comparison below means something
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().amax()))
        if getattr(ours.model[-1], "end2end", False) or "RTDETR" in type(theirs).__name__:
            return  # the end-to-end heads' own outputs: tests/nn/test_e2e_models.py, test_rtdetr_oracle.py
        expected = _first(theirs(x))
        assert torch.allclose(_like(_first(ours(x)), expected), expected, rtol=1e-4, atol=1e-4 * 192)
        # fuse() in float64: in float32 the calibrated BatchNorms of YOLOv9 amplify rounding to 0.5 px
        # (the package's own fuse() moves its boxes as much), which would hide a wrong fold
        unfused = _first(ours.double()(x.double()))
        ours.fuse()
        torch.testing.assert_close(_first(ours(x.double())), unfused, rtol=1e-7, atol=1e-7 * 192)


@pytest.mark.parametrize("name", ["yolov9t", "yolov6n", "yolov3-tiny", "yolov8n-c2fpsa"])
def test_package_checkpoint_imports_without_the_package(name, tmp_path):
    import yaml
    from ultralytics import YOLO as PackageYOLO
    from ultralytics.nn.tasks import yaml_model_load

    torch.manual_seed(0)
    source = f"{name}.yaml"
    if name == "yolov8n-c2fpsa":  # the package's C2fPSA and DWConvTranspose2d, which its unpickler refused
        cfg = {k: v for k, v in yaml_model_load("yolov8n.yaml").items() if k != "yaml_file"}
        cfg["backbone"][-2] = [-1, 1, "C2fPSA", [1024]]
        cfg["head"][0] = [-1, 1, "DWConvTranspose2d", [512, 2, 2]]
        source = tmp_path / f"{name}.yaml"
        source.write_text(yaml.safe_dump(cfg))
    package = PackageYOLO(str(source))
    package.save(tmp_path / f"{name}.pt")
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        expected = _first(package.model.eval()(x))
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    script = (
        "import sys, torch\n"
        "from yolotr import YOLO\n"
        f"m = YOLO({str(tmp_path / f'{name}.pt')!r}).model.float().eval()\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        "with torch.no_grad():\n"
        "    y = m(io['x'])\n"
        "y = y[0] if isinstance(y, (tuple, list)) else y\n"
        "y = y if y.shape == io['y'].shape else y.transpose(1, 2)\n"
        "assert 'ultralytics' not in sys.modules\n"
        "print(float((y - io['y']).abs().max()))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.strip().splitlines()[-1]) < 1e-3
