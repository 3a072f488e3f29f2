"""``optimizer: auto`` and MuSGD's parameter groups as the ``ultralytics`` package's trainer builds them."""

from __future__ import annotations

import types

import pytest
import torch
import yaml

from yolotr.engine.optim import build_optimizer, resolve_auto_optimizer, resolve_train_settings
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel


def _cfg(**kw) -> dict:
    return {"optimizer": "auto", "batch": 16, "nbs": 64, "epochs": 100, "lr0": 0.01, "momentum": 0.937,
            "warmup_bias_lr": 0.1, **kw}  # fmt: skip


def test_auto_follows_the_package_rule() -> None:
    # 6,400 images / max(16, 64) = 100 steps per epoch; 100 epochs = 10,000: not over the threshold
    cfg = _cfg()
    assert resolve_auto_optimizer(cfg, 6400, nc=80) == "AdamW"
    assert (cfg["optimizer"], cfg["lr0"], cfg["momentum"], cfg["warmup_bias_lr"]) == ("AdamW", 0.000119, 0.9, 0.0)
    cfg = _cfg()
    assert resolve_auto_optimizer(cfg, 6401, nc=3) == "MuSGD"  # 101 steps x 100 epochs
    assert (cfg["lr0"], cfg["momentum"], cfg["warmup_bias_lr"]) == (0.01, 0.9, 0.0)
    cfg = _cfg(batch=64)  # the global batch counts: 2 processes of 64 = 128 > nbs
    assert resolve_auto_optimizer(cfg, 12_800, nc=3, world=2) == "AdamW"  # 12,800 / 128 x 100 = 10,000
    assert resolve_auto_optimizer(_cfg(batch=64), 12_800, nc=3, world=1) == "MuSGD"  # / 64: 20,000
    fixed = _cfg(optimizer="SGD")
    assert resolve_auto_optimizer(fixed, 10**6, nc=3) == "SGD" and fixed == _cfg(optimizer="SGD")


def test_unresolved_auto_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="resolve it first"):
        build_optimizer(DetectionModel("yolo26n.yaml", nc=3), "auto", 0.01, 0.9, 5e-4, 1.0)


def _package_lrs(model, lr: float) -> dict[str, float]:
    """Each parameter's learning rate in the package trainer's MuSGD (its build_optimizer, called bare)."""
    from ultralytics.engine.trainer import BaseTrainer

    fake = types.SimpleNamespace(args=types.SimpleNamespace(lr0=lr), data={"nc": 3})
    opt = BaseTrainer.build_optimizer(fake, model, name="MuSGD", lr=lr, momentum=0.9, decay=5e-4)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: (g["lr"], bool(g.get("use_muon"))) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov10n.yaml"])
def test_musgd_groups_equal_the_package_trainers(cfg: str) -> None:
    """Per parameter: the learning rate (3x for the class branches cv3 / one2one_cv3) and whether Muon
    updates it, against the package's own build_optimizer on the package's model of the same YAML."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel as PackageModel

    from yolotr.models.detection import resolve_model_yaml

    path, scale = resolve_model_yaml(cfg)
    spec = {**yaml.safe_load(path.read_text()), "scale": scale or "n"}
    theirs = _package_lrs(PackageModel(spec, nc=3, verbose=False), 0.01)
    model = DetectionModel(cfg, nc=3)
    opt = build_optimizer(model, "MuSGD", 0.01, 0.9, 5e-4, 1.0)  # lr_transformer_scale 1: the package has none
    ids = {id(p): n for n, p in model.named_parameters()}
    ours = {ids[id(p)]: (g["lr"], bool(g["use_muon"])) for g in opt.param_groups for p in g["params"]}
    assert set(ours) <= set(theirs) and len(theirs) - len(ours) <= 3  # theirs also holds DFL's fixed bins
    assert sum(lr == pytest.approx(0.03) for lr, _ in ours.values()) > 10
    for name, (lr, muon) in ours.items():
        assert (lr, muon) == (pytest.approx(theirs[name][0]), theirs[name][1]), name
    assert all(isinstance(o, torch.optim.Optimizer) for o in (opt,))


@pytest.mark.parametrize(
    ("model", "scale"),
    [("yolo26n.yaml", 1.0), ("yolo11n.yaml", 1.0), ("yolov5n.yaml", 1.0), ("yolov8n-swinv2.yaml", 0.2),
     ("yolo11n-transformerc3.yaml", 0.2), ("yolov5n-c3tr.yaml", 0.2)],
)  # fmt: skip
def test_auto_transformer_scale_damps_only_yolotrs_blocks(model: str, scale: float, caplog) -> None:
    """``lr_transformer_scale: auto``: the packages' own attention (C2PSA in yolo11n and yolo26n) at their lr, a
    model with TransformerC3, C3TR or Swin V2 at 0.2 (all its attention layers); the number lands in the settings."""
    cfg = Trainer({"model": model}).cfg
    assert cfg["lr_transformer_scale"] == "auto"
    with caplog.at_level("INFO", logger="yolotr"):
        resolve_train_settings(cfg, DetectionModel(model, nc=3), {"model"}, n_images=64)
    assert cfg["lr_transformer_scale"] == scale
    assert f"lr_transformer_scale: auto -> {scale:g}" in caplog.text


def test_transformer_scale_setting_takes_a_number_or_auto() -> None:
    cfg = Trainer({"lr_transformer_scale": "0.5"}).cfg
    assert cfg["lr_transformer_scale"] == 0.5
    resolve_train_settings(cfg, DetectionModel("yolov8n-swinv2.yaml", nc=3), {"lr_transformer_scale"}, n_images=64)
    assert cfg["lr_transformer_scale"] == 0.5  # given: kept
    for bad in ("fast", -1, True, float("inf"), "nan"):
        with pytest.raises(ConfigError, match="'lr_transformer_scale' must be a number >= 0 or auto"):
            Trainer({"lr_transformer_scale": bad})
