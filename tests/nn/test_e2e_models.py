"""The NMS-free line (YOLOv10, YOLO26): the package's YAMLs build exactly, its checkpoints import through
the restricted unpickler and reproduce its eval outputs, the head keeps its output contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, load_model_yaml
from yolotr.models.loading import load_model
from yolotr.nn.blocks import SPPF
from yolotr.nn.head_af import AnchorFreeDetect
from yolotr.nn.head_e2e import E2EDetect, V10Detect
from yolotr.nn.v10_blocks import PSA, C2fCIB, RepVGGDW, SCDown
from yolotr.ops.boxes import clip_boxes, non_max_suppression

from ..conftest import SHARED

NEXT = SHARED / "reference" / "ultralytics-next"
needs_next = pytest.mark.skipif(not NEXT.is_dir(), reason=f"shared reference {NEXT} not found (set YOLOTR_SHARED)")
ORACLE = NEXT / "next_oracle.pt"
needs_oracle = pytest.mark.skipif(not ORACLE.is_file(), reason=f"{ORACLE} not found (set YOLOTR_SHARED)")
YOLO_NAMES = [f"yolo26{s}" for s in "nsmlx"] + [f"yolov10{s}" for s in "nsmblx"]


def _reference() -> dict:
    path = NEXT / "param_counts.json"
    return json.loads(path.read_text())["models"] if path.is_file() else {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_next
@pytest.mark.parametrize("name", YOLO_NAMES)
def test_shipped_yaml_builds_exactly(name: str) -> None:
    """The shipped yolo26.yaml / yolov10<s>.yaml (the package's rows) against the package's build."""
    ref = _reference()[name]
    model = DetectionModel(f"{name}.yaml")
    state = model.state_dict()
    keys = list(state)
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert len(state) == ref["state_dict_tensors"]
    assert len(model.model) == ref["layers"]
    assert model.stride.tolist() == ref["strides"]
    assert [[k, list(state[k].shape)] for k in keys[: len(ref["first_keys"])]] == ref["first_keys"]
    assert [[k, list(state[k].shape)] for k in keys[-len(ref["last_keys"]) :]] == ref["last_keys"]
    head = model.model[-1]
    assert type(head) is {"Detect": E2EDetect, "v10Detect": V10Detect}[ref["head_class"]]
    # the package's head reads end2end False as built although yolo26.yaml says True; ours follows the YAML
    assert head.end2end and ref["has_one2one_branch"]
    assert (head.reg_max, head.max_det, head.nl) == (ref["reg_max"], ref["max_det"], ref["nl"])


def test_shipped_yamls_are_the_package_rows() -> None:
    if not NEXT.is_dir():
        pytest.skip(f"shared reference {NEXT} not found")
    import yaml

    for name in ("yolo26", "yolov10n", "yolov10b", "yolov10x"):
        ours = load_model_yaml(f"{name}.yaml")
        theirs = yaml.safe_load((NEXT / "yaml" / f"{name}.yaml").read_text())
        assert {k: ours[k] for k in theirs} == theirs


def test_v10_blocks_shapes_and_fuse() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 32, 16, 20)
    assert SCDown(32, 48, 3, 2)(x).shape == (2, 48, 8, 10)
    assert C2fCIB(32, 32, 2, True, True)(x).shape == (2, 32, 16, 20)
    big = torch.rand(1, 128, 8, 8)
    assert PSA(128, 128)(big).shape == big.shape
    with pytest.raises(ValueError, match="PSA keeps its width"):
        PSA(128, 256)
    rep = RepVGGDW(32).eval()
    for m in rep.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        before = rep(x)
        rep.fuse()
        assert not hasattr(rep, "conv1")
        assert torch.allclose(rep(x), before, atol=1e-5)
    sppf = SPPF(32, 32, 5, 3, True).eval()
    assert sppf.add and isinstance(sppf.cv1.act, torch.nn.Identity)
    with torch.no_grad():
        with_residual = sppf(x)
        sppf.add = False
        assert torch.allclose(with_residual, sppf(x) + x)


def test_sppf_cv1_is_unactivated_when_the_row_names_its_pool_count() -> None:
    """The package's rule (8.4): an SPPF row ``[c2]`` / ``[c2, k]`` keeps ``cv1``'s activation, a row that
    names ``n`` drops it whatever ``shortcut`` is. YOLO26-P6's ``[1024, 5, 3, False]`` had SiLU here, so its
    P6 features (and losses) differed from the package's."""
    assert isinstance(SPPF(32, 32, 5).cv1.act, torch.nn.SiLU) and SPPF(32, 32, 5).n == 3
    no_shortcut = SPPF(32, 32, 5, 3, False)
    assert isinstance(no_shortcut.cv1.act, torch.nn.Identity) and not no_shortcut.add
    p6 = DetectionModel("yolo26n-p6.yaml", nc=2)
    assert isinstance(p6.model[11], SPPF) and isinstance(p6.model[11].cv1.act, torch.nn.Identity)
    assert isinstance(DetectionModel("yolov8n.yaml", nc=2).model[9].cv1.act, torch.nn.SiLU)


def test_an_input_off_the_stride_grid_is_named() -> None:
    """A direct forward on a size that is not a multiple of the largest stride failed inside ``torch.cat``."""
    model = DetectionModel("yolo26n-p6.yaml", nc=2).eval()
    with pytest.raises(ValueError, match=r"input of 160x100: .* largest stride 64 \(e\.g\. 192x128"):
        model(torch.rand(1, 3, 160, 100))
    det, _ = model(torch.rand(1, 3, 192, 128))
    assert det.shape == (1, 300, 6)


def test_training_on_one_image_whose_coarsest_level_is_a_pixel_is_named() -> None:
    """An epoch's last batch of one image at imgsz 32 failed inside BatchNorm ("Expected more than 1 value per
    channel when training") with a traceback; two images, or 64 px, train."""
    model = DetectionModel("yolov8n.yaml", nc=2).train()
    with pytest.raises(
        ConfigError, match=r"a batch of one 32x32 image: the stride-32 level is one pixel.* at least 64"
    ):
        model(torch.rand(1, 3, 32, 32))
    assert len(model(torch.rand(2, 3, 32, 32))) == 3 and len(model(torch.rand(1, 3, 64, 64))) == 3


def test_head_output_contract() -> None:
    """Training: both branches' maps; eval: (B, 300, 6) top-k rows by default, the one-to-many branch as the
    anchor-free head gives it when end2end is switched off; the one-to-one branch reads detached features."""
    model = DetectionModel("yolo26n.yaml", nc=3)
    head = model.model[-1]
    assert isinstance(head, E2EDetect) and head.reg_max == 1 and head.end2end
    x = torch.rand(2, 3, 96, 128)
    model.train()
    out = model(x)
    shapes = [(2, 4 + 3, 96 // s, 128 // s) for s in (8, 16, 32)]
    assert [tuple(m.shape) for m in out["one2many"]] == shapes
    assert [tuple(m.shape) for m in out["one2one"]] == shapes
    sum(m.sum() for m in out["one2one"]).backward()
    assert model.model[0].conv.weight.grad is None  # the one-to-one loss does not reach the backbone
    assert head.one2one_cv2[0][0].conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        det, raw = model(x)
        # 252 anchors: as the package, 252 real rows (of 252 x 3 pairs), then filler rows of score -1
        assert det.shape == (2, 300, 6) and (det[:, :252, 4] >= 0).all()
        assert (det[:, 252:] == torch.tensor([0.0, 0, 0, 0, -1, 0])).all()
        small, _ = model(torch.rand(1, 3, 32, 32))  # 21 anchors: 21 rows, then filler
        assert small.shape == (1, 300, 6) and (small[0, :21, 4] >= 0).all() and (small[0, 21:, 4] == -1).all()
        head.set_end2end(True, max_det=50)
        det, raw = model(x)
        assert det.shape == (2, 50, 6)
        assert (det[..., 4].diff(dim=1) <= 0).all()  # sorted by score
        assert ((det[..., 5] >= 0) & (det[..., 5] < 3) & (det[..., 5] == det[..., 5].round())).all()
        rows = head.decode_xyxy(raw["one2one"])
        best = rows[..., 4:].max()
        assert torch.isclose(det[..., 4].max(), best)
        head.set_end2end(False)
        decoded, _ = model(x)
        assert torch.equal(decoded, AnchorFreeDetect.decode(head, raw["one2many"]))
    head.set_end2end(True, max_det=300)


def test_end2end_on_a_head_that_cannot_is_a_config_error() -> None:
    cfg = load_model_yaml("yolov5n.yaml")
    cfg["end2end"] = True
    with pytest.raises(ConfigError, match=r"yolov5n.yaml: layer 24 .*'end2end: True' needs a head with a one-to-one"):
        DetectionModel(cfg)
    cfg = load_model_yaml("yolo26n.yaml")
    cfg["end2end"] = "yes"
    with pytest.raises(ConfigError, match=r"'end2end' must be True or False, got 'yes'"):
        DetectionModel(cfg)
    cfg["end2end"] = False  # the same rows without end2end build the plain anchor-free head
    assert type(DetectionModel(cfg).model[-1]) is AnchorFreeDetect


def _as_set_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each row of ``a`` the distance (max abs over the row) to the nearest row of ``b`` of the same class."""
    d = (a[:, None, :5] - b[None, :, :5]).abs().amax(-1)
    d = torch.where(a[:, None, 5] == b[None, :, 5], d, torch.inf)
    return d.amin(1)


@needs_oracle
@pytest.mark.parametrize("name", ["yolo26n", "yolov10n"])
def test_package_checkpoint_reproduces_oracle(name: str) -> None:
    oracle = torch.load(ORACLE, weights_only=True)["models"][name]
    already = "ultralytics" in sys.modules
    model = load_model(NEXT / oracle["checkpoint"])
    assert already or "ultralytics" not in sys.modules  # read without the package's code
    head = model.model[-1]
    assert isinstance(head, E2EDetect) and head.end2end and head.reg_max == oracle["reg_max"]
    for case in oracle["cases"]:
        x = case["input_uint8"].float() / 255
        floor = case["noise_floor"]["fused"]
        box_tol = 2 * max(floor["eval_output_boxes"], floor["one2one_decoded_boxes"])
        with torch.no_grad():
            det, raw = model(x)
            head.set_end2end(False)
            one2many, _ = model(x)
            head.set_end2end(True)
        for key in ("one2many", "one2one"):
            for got, want in zip(raw[key], case[f"train_maps_{key}"]):
                assert got.shape == want.shape and (got - want).abs().max() <= 1e-3
        one2one = head.decode_xyxy(raw["one2one"]).transpose(1, 2)
        want = case["one2one_decoded"]
        assert (one2one[:, :4] - want[:, :4]).abs().max() <= box_tol
        assert (one2one[:, 4:] - want[:, 4:]).abs().max() <= 1e-4
        want = case["eval_output"]  # (1, 4 + nc, A) xywh pixels, sigmoid scores
        got = one2many if one2many.shape == want.shape else one2many.transpose(1, 2)
        assert (got[:, :4] - want[:, :4]).abs().max() <= box_tol
        assert (got[:, 4:] - want[:, 4:]).abs().max() <= 1e-4
        ref = case["eval_output_end2end"][0]
        assert det.shape == (1, 300, 6)
        assert _as_set_distance(det[0], ref).max() <= box_tol
        assert _as_set_distance(ref, det[0]).max() <= box_tol
        # final detections at conf 0.0, max_det 300, clipped to the input: NMS-free, and one-to-many + NMS
        h, w = case["imgsz"]
        end2end = det[0][det[0][:, 4] > 0.0][:300].clone()
        (nms,) = non_max_suppression(got.transpose(1, 2), 0.0, 0.7, max_det=300, nc=80)  # rows (1, A, 4 + nc)
        for mine, key in ((end2end, "detections_end2end"), (nms, "detections_nms")):
            mine[:, :4] = clip_boxes(mine[:, :4], (h, w))
            theirs = case[key]
            assert mine.shape == theirs.shape
            assert _as_set_distance(mine, theirs).max() <= box_tol
            assert _as_set_distance(theirs, mine).max() <= box_tol


def test_e2e_model_round_trips_through_our_checkpoint(tmp_path: Path) -> None:
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    model = DetectionModel("yolov10n.yaml", nc=2).eval()
    save_checkpoint(model_checkpoint(model), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert isinstance(loaded.model[-1], V10Detect)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
