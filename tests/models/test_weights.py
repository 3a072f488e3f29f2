"""Checkpoints: official YOLOv5 import without its code, refusal of foreign pickles, our own format."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile

import pytest
import torch

from tests.conftest import shared_path
from tests.test_cli_errors import BAD_CHECKPOINTS, write_bad_checkpoint
from yolotr import YOLO
from yolotr.errors import CheckpointError
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model
from yolotr.models.weights import (
    model_checkpoint,
    pickled_origin,
    read_checkpoint,
    save_checkpoint,
    sniff_checkpoint,
    transfer_weights,
)


@pytest.fixture(scope="module")
def official():
    return YOLO(shared_path("weights", "yolov5n.pt"))


def test_official_raw_output_matches_reference(official):
    x = torch.load(shared_path("reference", "yolov5", "bus_input_640.pt"), weights_only=True)
    expected = torch.load(shared_path("reference", "yolov5", "bus_raw_640.pt"), weights_only=True)
    with torch.no_grad():
        decoded = official.model(x)[0]
    assert decoded.shape == expected.shape
    assert torch.allclose(decoded, expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("image", ["bus", "zidane"])
@pytest.mark.parametrize("mode", ["square640", "rect640"])
def test_official_detections_match_reference(official, image, mode):
    ref = json.loads(shared_path("reference", "yolov5", "reference_detections.json").read_text())
    assert list(official.names.values()) == ref["names"]  # YOLO.names: {0: "person", ...}
    expected = ref["images"][image][mode]["detections"]
    results = official.predict(shared_path("images", f"{image}.jpg"), imgsz=640, rect=mode == "rect640", max_det=1000)
    got = results[0].boxes.data.tolist()
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert max(abs(a - b) for a, b in zip(g[:4], e[:4])) <= 1.0
        assert abs(g[4] - e[4]) <= 1e-3
        assert int(g[5]) == e[5]


def test_refuses_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: refuses to unpickle '(posix|os|nt)\.system'"):
        load_model(path)
    assert not marker.exists()


class Stranger:
    pass


def test_refuses_unknown_class(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": Stranger()}, path)
    with pytest.raises(CheckpointError, match=r"foreign.pt: refuses to unpickle '.*Stranger'"):
        load_model(path)


def test_truncated_checkpoint(tmp_path):
    data = shared_path("weights", "yolov5n.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: cannot read checkpoint"):
        load_model(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: no such checkpoint file"):
        load_model(tmp_path / "nothing.pt")


def test_own_checkpoint_roundtrip_is_weights_only(tmp_path):
    model = DetectionModel("yolov5n.yaml", nc=3)
    model.names = ["a", "b", "c"]
    path = save_checkpoint(model_checkpoint(model, epoch=4), tmp_path / "w" / "last.pt")
    assert not list(path.parent.glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 4
    loaded = load_model(path)
    assert loaded.names == ["a", "b", "c"]
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_mismatched_checkpoint_lists_keys_and_shapes(tmp_path):
    model = DetectionModel("yolov5n.yaml", nc=3)
    checkpoint = model_checkpoint(model)
    checkpoint["state_dict"]["model.0.conv.weight"] = torch.zeros(8, 3, 3, 3)
    del checkpoint["state_dict"]["model.24.m.0.bias"]
    path = save_checkpoint(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    message = str(e.value)
    assert "bad.pt" in message and "model.0.conv.weight (checkpoint (8, 3, 3, 3) vs model (16, 3, 6, 6))" in message
    assert "missing 1: model.24.m.0.bias" in message


def test_transfer_changes_weights_to_checkpoint(official):
    target = DetectionModel("yolov5n.yaml", nc=2)
    before = target.state_dict()["model.0.conv.weight"].clone()
    source = official.model.state_dict()
    report = transfer_weights(target, source)
    after = target.state_dict()["model.0.conv.weight"]
    assert not torch.equal(before, after)
    assert torch.equal(after, source["model.0.conv.weight"])
    assert len(report.mismatched) == 6  # the Detect convs (weight, bias) of the three scales: 80 vs 2 classes
    assert len(report.loaded) == len(source) - 6


def test_read_checkpoint_kind(tmp_path):
    assert read_checkpoint(shared_path("weights", "yolov5n.pt"))[0] == "yolov5"


def test_constant_tables_in_checkpoint_are_skipped_with_a_note(tmp_path):
    model = DetectionModel("yolov5n-swinv2.yaml", nc=2)
    checkpoint = model_checkpoint(model)
    layer = model.get_submodule("model.8.m.blocks.0.attn")
    for name in ("relative_coords_table", "relative_position_index"):
        checkpoint["state_dict"][f"model.8.m.blocks.0.attn.{name}"] = getattr(layer, name).clone()
    path = save_checkpoint(checkpoint, tmp_path / "tutorial.pt")
    loaded = load_model(path)
    assert torch.equal(loaded.state_dict()["model.0.conv.weight"], model.state_dict()["model.0.conv.weight"])


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_yolo_refuses_a_file_that_is_not_a_checkpoint(kind, tmp_path):
    path, phrase = write_bad_checkpoint(kind, tmp_path)
    with pytest.raises(CheckpointError) as e:
        YOLO(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and phrase in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:4f18\nsize 3900000\n", "a Git LFS pointer"),
        (b"\x1f\x8b\x08\x00" + bytes(64), "a gzip archive"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
        (b"\n\n  \n", "a text file of blank lines"),
        (pickle.dumps({"epoch": 3}), "a pickle of a dict with keys 'epoch' (written by pickle.dump, not torch.save)"),
    ],
)
def test_sniff_says_what_the_file_looks_like(tmp_path, content, phrase):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    kind, looks = sniff_checkpoint(path)
    assert kind == "other" and phrase in looks
    with pytest.raises(CheckpointError, match=re.escape(f"weights.pt: not a checkpoint: it looks like {looks}")):
        read_checkpoint(path)


def test_sniff_admits_both_torch_formats(tmp_path):
    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert sniff_checkpoint(tmp_path / "zip.pt")[0] == "zip"
    kind, looks = sniff_checkpoint(tmp_path / "legacy.pt")
    assert kind == "pickle" and "legacy format" in looks
    for name in ("zip.pt", "legacy.pt"):
        kind, loaded = read_checkpoint(tmp_path / name)
        assert kind == "state_dict" and torch.equal(loaded["w"], state["w"])


def test_truncated_legacy_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(256)}, tmp_path / "full.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half.pt: cannot read checkpoint: it looks like a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "half.pt")


@pytest.mark.parametrize("payload", [b"hello, this is not a pickle", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01\x95"])
def test_damaged_pickle_inside_a_torch_zip(tmp_path, payload):
    path = tmp_path / "damaged.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError, match=r"damaged.pt: cannot read checkpoint: it looks like a PyTorch zip"):
        load_model(path)


def test_checkpoints_get_the_umasks_mode_not_mkstemps(tmp_path):
    """Written through a private temporary file (mode 0600) and renamed: the file must end as any other the
    user writes (0644 under umask 022), not readable by its owner alone."""
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    before = os.umask(0o022)
    try:
        path = save_checkpoint(model_checkpoint(DetectionModel("yolov5n.yaml", nc=2)), tmp_path / "best.pt")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == 0o644


class _WindowsPathAsWritten:
    """Pickles as a ``pathlib.WindowsPath`` does on Windows (the class cannot be built on Linux)."""

    def __reduce__(self):
        import pathlib

        return pathlib.WindowsPath, ("C:\\runs", "h.yaml")


def test_paths_in_a_pickled_checkpoint_are_read_as_text():
    """YOLOv5's ``opt`` may hold ``pathlib`` paths (its ``parse_opt`` defaults); a Windows path rebuilt on Linux as
    a path object raises, and a path object could touch the file system: they are read as their text."""
    import io
    import pathlib

    from yolotr.models.foreign_pickle import restricted_pickle_module

    payload = pickle.dumps({"data": pathlib.PosixPath("/d/coco.yaml"), "hyp": _WindowsPathAsWritten()})
    assert b"WindowsPath" in payload and b"PosixPath" in payload
    loaded = restricted_pickle_module("x.pt").load(io.BytesIO(payload))
    assert loaded == {"data": "/d/coco.yaml", "hyp": "C:\\runs\\h.yaml"}


def test_a_checkpoint_of_yolov5s_pip_package_loads(tmp_path):
    """``pip install yolov5`` pickles YOLOv5's classes as ``yolov5.models.*``; its ``train.py`` checkpoint was
    refused as 'corrupt or malicious'. It loads as an official one, with the same outputs."""
    yolov5 = pytest.importorskip("yolov5", reason="the YOLOv5 pip package is a bench extra (pip install -e .[bench])")
    import copy
    import pathlib

    from yolov5.models.yolo import Model

    torch.manual_seed(0)
    theirs = Model(f"{yolov5.__path__[0]}/models/yolov5n.yaml", nc=3).eval()
    (tmp_path / "data.yaml").write_text("names: [a, b, c]\n")
    opt = {"data": pathlib.PosixPath(tmp_path / "data.yaml"), "imgsz": 320}  # a path, as vars(opt) may hold it
    checkpoint = {"model": copy.deepcopy(theirs).half(), "ema": None, "opt": opt, "yolov5pip_version": "7.0.14"}
    torch.save(checkpoint, tmp_path / "best.pt")
    ours = load_model(tmp_path / "best.pt")
    assert pickled_origin(read_checkpoint(tmp_path / "best.pt")[1]) == "YOLOv5 pip package 7.0.14"
    assert ours.nc == 3 and ours.imgsz == 320 and ours.train_data == str(tmp_path / "data.yaml")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs.half().float()(x)[0], rtol=1e-4, atol=1e-4)


def test_a_caption_or_incomplete_yolotr_checkpoint_is_named_not_a_key_error(tmp_path):
    """A caption checkpoint given to prediction or validation failed with ``KeyError: 'model_yaml'``."""
    caption, partial = tmp_path / "caption.pt", tmp_path / "partial.pt"
    torch.save({"format": "yolotr", "task": "caption", "model_config": {}, "state_dict": {}}, caption)
    torch.save({"format": "yolotr", "names": ["a"], "state_dict": {}}, partial)
    with pytest.raises(CheckpointError, match=r"caption\.pt: a yolotr caption checkpoint, not a detector: .*caption"):
        load_model(caption)
    with pytest.raises(CheckpointError, match=r"partial\.pt: a yolotr checkpoint without 'model_yaml'; is it damaged"):
        load_model(partial)


def test_a_format_1_checkpoint_of_yolo26_p6_runs_as_it_trained(tmp_path, caplog):
    """Format 1 built YOLO26-P6's SPPF ``[1024, 5, 3, False]`` with cv1 activated; format 2 builds it without,
    as the package. An old checkpoint keeps its activation (its row rewritten to ``[1024, 5]``, so it saves
    that way); a new one does not."""
    model = DetectionModel("yolo26n-p6.yaml", nc=2).eval()
    x = torch.rand(1, 3, 128, 128)
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    save_checkpoint(model_checkpoint(model), new)
    save_checkpoint({**model_checkpoint(model), "format_version": 1}, old)
    with caplog.at_level("INFO", logger="yolotr"):
        restored = load_model(old)
    assert "old.pt: SPPF layer(s) 11 keep cv1's activation" in caplog.text
    assert restored.yaml["backbone"][11][3] == [1024, 5]
    assert isinstance(restored.model[11].cv1.act, torch.nn.SiLU)
    model.model[11].cv1.act = torch.nn.SiLU()  # the layer format 1 built
    with torch.no_grad():
        torch.testing.assert_close(restored(x)[0], model(x)[0])
    again = tmp_path / "again.pt"
    save_checkpoint(model_checkpoint(restored), again)
    assert isinstance(load_model(again).model[11].cv1.act, torch.nn.SiLU)  # saved as format 2 with [1024, 5]
    assert isinstance(load_model(new).model[11].cv1.act, torch.nn.Identity)
