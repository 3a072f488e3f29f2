"""The anchor-free line: the ultralytics package's YAMLs build exactly, its checkpoints import and
reproduce its outputs, the head keeps the output contract."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from yolotr.errors import CheckpointError, ConfigError
from yolotr.models.detection import DetectionModel, load_model_yaml, resolve_model_yaml
from yolotr.models.loading import load_model
from yolotr.nn.head_af import AnchorFreeDetect

from ..conftest import SHARED

ULTRA = SHARED / "reference" / "ultralytics"
needs_ultra = pytest.mark.skipif(not ULTRA.is_dir(), reason=f"shared reference {ULTRA} not found (set YOLOTR_SHARED)")


def _reference() -> dict:
    path = ULTRA / "param_counts.json"
    return json.loads(path.read_text())["models"] if path.is_file() else {}


def _scaled_name(name: str, ref: dict) -> str:
    """``yolov8-p2s`` -> ``yolov8s-p2.yaml`` (the package's naming), ``yolo11n`` -> ``yolo11n.yaml``."""
    stem = ref["yaml"][: -len(".yaml")]
    if "-" in stem:
        base, suffix = stem.split("-", 1)
        return f"{base}{ref['scale']}-{suffix}.yaml"
    return f"{name}.yaml"


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ultralytics_yaml")
    for f in (ULTRA / "yaml").glob("*.yaml"):
        shutil.copy(f, d)
    return d


@needs_ultra
@pytest.mark.parametrize("name", sorted(_reference()) or ["yolov8n"])
def test_reference_yaml_builds_exactly(name: str, yaml_dir: Path) -> None:
    ref = _reference()[name]
    model = DetectionModel(yaml_dir / _scaled_name(name, ref))
    state = model.state_dict()
    keys = list(state)
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert len(state) == ref["state_dict_tensors"]
    assert len(model.model) == ref["layers"]
    assert model.stride.tolist() == ref["strides"]
    assert [[k, list(state[k].shape)] for k in keys[: len(ref["first_keys"])]] == ref["first_keys"]
    assert [[k, list(state[k].shape)] for k in keys[-len(ref["last_keys"]) :]] == ref["last_keys"]


def test_scale_letter_resolves_to_unified_yaml(tmp_path: Path) -> None:
    path, scale = resolve_model_yaml("yolov8s.yaml")
    assert (path.name, scale) == ("yolov8.yaml", "s")
    path, scale = resolve_model_yaml("yolov8m-p2.yaml")
    assert (path.name, scale) == ("yolov8-p2.yaml", "m")
    path, scale = resolve_model_yaml("yolo11x")
    assert (path.name, scale) == ("yolo11.yaml", "x")
    shutil.copy(resolve_model_yaml("yolo12.yaml")[0], tmp_path / "yolo12.yaml")
    cfg = load_model_yaml(tmp_path / "yolo12l.yaml")
    assert cfg["scale"] == "l" and cfg["yaml_file"] == "yolo12l.yaml"
    assert resolve_model_yaml("yolov5s.yaml")[0].name == "yolov5s.yaml"  # a file of its own wins


def test_width_capped_by_max_channels() -> None:
    small, large = DetectionModel("yolov8s.yaml"), DetectionModel("yolov8l.yaml")
    assert small.model[8].cv2.conv.out_channels == 512  # 1024 * 0.5
    assert large.model[8].cv2.conv.out_channels == 512  # min(1024, 512) * 1.0


def test_unknown_scale_letter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown scale 'q'.*n, s, m, l, x"):
        DetectionModel("yolov8q.yaml")
    cfg = load_model_yaml("yolov8.yaml")
    cfg["scale"] = "z"
    with pytest.raises(ConfigError, match="unknown scale 'z'"):
        DetectionModel(cfg)


def test_head_output_contract() -> None:
    model = DetectionModel("yolov8n.yaml", nc=3)
    head = model.model[-1]
    assert isinstance(head, AnchorFreeDetect) and head.legacy
    assert not DetectionModel("yolo11n.yaml", nc=3).model[-1].legacy
    x = torch.rand(2, 3, 96, 128)
    model.train()
    maps = model(x)
    assert [tuple(m.shape) for m in maps] == [(2, 64 + 3, 96 // s, 128 // s) for s in (8, 16, 32)]
    model.eval()
    with torch.no_grad():
        decoded, raw = model(x)
    anchors = sum(96 // s * 128 // s for s in (8, 16, 32))
    assert decoded.shape == (2, anchors, 4 + 3)
    assert ((decoded[..., 4:] >= 0) & (decoded[..., 4:] <= 1)).all()
    # uniform distributions: every side 7.5 cells away from the anchor point, scores sigmoid(0)
    zeros = [torch.zeros_like(r[:1]) for r in raw]
    boxes = head.decode(zeros)[0]
    assert torch.allclose(boxes[0], torch.tensor([4.0, 4.0, 120.0, 120.0, 0.5, 0.5, 0.5]))
    last = boxes[-1]  # last cell of the stride-32 level: centre (3.5, 2.5) cells
    assert torch.allclose(last[:4], torch.tensor([3.5 * 32, 2.5 * 32, 15 * 32, 15 * 32]))


def test_unknown_module_in_af_yaml_names_it() -> None:
    cfg = load_model_yaml("yolo11.yaml")
    cfg["scale"] = "n"
    cfg["backbone"][2][2] = "C3k3"
    with pytest.raises(ConfigError, match=r"layer 2 .*unknown module 'C3k3'; did you mean .*C3k2"):
        DetectionModel(cfg)


ORACLE = ULTRA / "anchor_free_oracle.pt"


@pytest.mark.skipif(not ORACLE.is_file(), reason=f"{ORACLE} not found (set YOLOTR_SHARED)")
@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo12n"])
def test_package_checkpoint_reproduces_oracle(name: str) -> None:
    oracle = torch.load(ORACLE, weights_only=True)["models"][name]
    already = "ultralytics" in sys.modules
    model = load_model(ULTRA / oracle["checkpoint"])
    assert already or "ultralytics" not in sys.modules  # read without the package's code
    assert model.names == [str(i) for i in range(80)]
    for case in oracle["cases"]:
        x = case["input_uint8"].float() / 255
        with torch.no_grad():
            decoded, raw = model(x)
        expected = case["eval_output"].transpose(1, 2)
        assert decoded.shape == expected.shape
        excess = (decoded - expected).abs() - 1e-4 * expected.abs()
        assert excess.max() <= 2e-3
        for got, want in zip(raw, case["train_maps"]):
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 2e-3


def _rewrite_pickle(src: Path, dst: Path, edit) -> None:
    """Copy a torch zip checkpoint, passing its ``data.pkl`` bytes through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = edit(data)
            zout.writestr(item, data)


@needs_ultra
def test_foreign_class_in_package_checkpoint_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"

    def inject(data: bytes) -> bytes:
        # replace the whole pickle by one that would run a shell command on load
        class Boom:
            def __reduce__(self):
                return (__import__("os").system, (f"touch {marker}",))

        return pickle.dumps({"model": Boom(), "version": "8.4.190"}, protocol=2)

    _rewrite_pickle(ULTRA / "yolov8n_rule.pt", evil, inject)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refuses to unpickle '(posix|os)\.system'"):
        load_model(evil)
    assert not marker.exists()


@needs_ultra
def test_package_checkpoint_with_unknown_module_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "custom.pt"

    def rename(data: bytes) -> bytes:
        return data.replace(b"C2f", b"C9x")  # the stored YAML rows and the pickled class name

    _rewrite_pickle(ULTRA / "yolov8n_rule.pt", bad, rename)
    with pytest.raises(CheckpointError, match=r"custom\.pt: .*module class .C9x. \(ultralytics\.nn\.modules\.block\)"):
        load_model(bad)


def test_af_model_yaml_round_trips_through_our_checkpoint(tmp_path: Path) -> None:
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    model = DetectionModel("yolo12n.yaml", nc=2).eval()
    save_checkpoint(model_checkpoint(model), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.yaml["scale"] == "n"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
    assert yaml.safe_dump(loaded.yaml)
