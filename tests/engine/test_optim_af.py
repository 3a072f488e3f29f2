"""Parameter groups of the anchor-free line: YOLO11's PSA and YOLO12's area attention train at
``lr_transformer_scale``, the DFL bin values are in no group."""

from __future__ import annotations

import pytest
import torch

from yolotr.engine.config import default_config
from yolotr.engine.optim import apply_schedule, build_optimizer, describe_groups, parameter_groups
from yolotr.models.detection import DetectionModel
from yolotr.nn.head_af import DFL
from yolotr.nn.psa import ABlock, PSABlock
from yolotr.ops.loss import build_loss

SCALE = 0.2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _by_name(model) -> dict[str, dict]:
    return {g["name"]: g for g in parameter_groups(model, 5e-4, SCALE)}


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def _dfl_weight(model) -> torch.Tensor:
    return next(m for m in model.modules() if isinstance(m, DFL)).conv.weight


@pytest.mark.parametrize(("cfg", "block", "layer"), [("yolo11n.yaml", PSABlock, 10), ("yolo12n.yaml", ABlock, 6)])
def test_attention_blocks_get_the_transformer_scale(cfg, block, layer):
    model = DetectionModel(cfg, nc=2)
    groups = _by_name(model)
    assert groups["decay/transformer"]["lr_scale"] == SCALE and groups["decay"]["lr_scale"] == 1.0
    transformer = set().union(*(_ids(g) for name, g in groups.items() if name.endswith("/transformer")))
    blocks = [m for m in model.modules() if isinstance(m, block)]
    assert any(isinstance(m, block) for m in model.model[layer].modules())
    inside = {id(p) for m in blocks for p in m.parameters()}
    assert inside <= transformer
    attn = next(m for m in model.model[layer].modules() if isinstance(m, block)).attn
    assert id(attn.qkv.conv.weight) in _ids(groups["decay/transformer"])
    assert id(attn.qkv.bn.weight) in _ids(groups["no_decay/transformer"])
    assert id(attn.qkv.bn.bias) in _ids(groups["bias/transformer"])
    cv1 = model.model[layer].cv1.conv.weight  # the CSP wrapper around the blocks stays a CNN parameter
    assert id(cv1) in _ids(groups["decay"]) and id(cv1) not in transformer
    everything = set().union(*(_ids(g) for g in groups.values()))
    assert transformer - inside == set()  # nothing else in this model is a Transformer parameter
    assert everything == {id(p) for p in model.parameters()} - {id(_dfl_weight(model))}
    assert sum(len(g["params"]) for g in groups.values()) == len(everything)  # no parameter twice


def test_dfl_weight_is_in_no_group_even_when_unfrozen():
    model = DetectionModel("yolov8n.yaml", nc=2)
    dfl = _dfl_weight(model)
    assert not dfl.requires_grad
    assert all(id(dfl) not in _ids(g) for g in _by_name(model).values())
    model.requires_grad_(True)  # as a fine-tuning script that unfreezes everything would
    assert all(id(dfl) not in _ids(g) for g in _by_name(model).values())


def test_sgd_step_moves_cnn_weights_not_attention_at_scale_zero():
    """With ``lr_transformer_scale`` 0 one real step leaves every PSABlock parameter and the DFL bins as
    they were, and moves the convolutions around them."""
    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=2).train()
    optimizer = build_optimizer(model, "SGD", 0.01, 0.9, 5e-4, 0.0)
    cfg = dict(lr0=0.01, lrf=0.01, epochs=10, cos_lr=False, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.9)
    apply_schedule(optimizer, cfg, epoch=1, iteration=100, warmup_iters=10)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["decay/transformer"] == 0.0 and lrs["decay"] == pytest.approx(0.01 * (1 - 0.1 * 0.99))
    psa = model.model[10].m[0]
    before_psa = [p.detach().clone() for p in psa.parameters()]
    before_cv1 = model.model[10].cv1.conv.weight.detach().clone()
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 1, 0.3, 0.6, 0.2, 0.4]])
    loss, _ = build_loss(model, default_config(), 64)(model(torch.rand(2, 3, 64, 64)), targets)
    loss.backward()
    assert psa.attn.qkv.conv.weight.grad.abs().sum() > 0  # it has a gradient; the scale holds it still
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(before_psa, psa.parameters()))
    assert not torch.equal(before_cv1, model.model[10].cv1.conv.weight)
    assert torch.equal(_dfl_weight(model).view(-1), torch.arange(16, dtype=torch.float32))


def test_the_optimizer_line_numbers_the_groups_as_the_lr_columns():
    """``lr/pg<i>`` in results.csv and TensorBoard follow the optimizer's order; the logged line says which is
    which (with Transformer parameters, pg1 is ``decay/transformer``, not the no-decay weights)."""
    model = DetectionModel("yolo11n.yaml", nc=3)
    optimizer = build_optimizer(model, "SGD", 0.01, 0.937, 5e-4, SCALE)
    line = describe_groups(optimizer)
    assert line.startswith("SGD(lr=0.01, momentum=0.937): pg0 decay (")
    for i, g in enumerate(optimizer.param_groups):
        assert f"pg{i} {g['name']} ({len(g['params'])} tensors, weight_decay {g['weight_decay']:g})" in line
    assert "pg1 decay/transformer" in line


@pytest.mark.parametrize("name", ["Adam", "adamax", "NAdam", "RAdam", "RMSprop", "rmsprop"])
def test_the_packages_other_optimizers_step_as_the_package_builds_them(name):
    """Adam, Adamax, NAdam, RAdam and RMSprop, the ``ultralytics`` package's other ``optimizer`` choices, were
    refused; three steps of ours move every parameter as three of the package's ``build_optimizer`` (its groups
    in another order: each parameter's update is its own)."""
    trainer = pytest.importorskip("ultralytics.engine.trainer", reason="the ultralytics package is a bench extra")
    torch.manual_seed(0)
    ours = DetectionModel("yolov8n.yaml", nc=2)
    theirs = DetectionModel("yolov8n.yaml", nc=2)
    theirs.load_state_dict(ours.state_dict())
    mine = build_optimizer(ours, name, lr=0.01, momentum=0.9, weight_decay=5e-3, transformer_scale=1.0)
    package = trainer.BaseTrainer.build_optimizer(None, theirs, name, lr=0.01, momentum=0.9, decay=5e-3)
    assert type(mine) is type(package)
    generator = torch.Generator().manual_seed(1)
    trained = [
        (a, b) for (key, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True) if ".dfl" not in key
    ]
    for _ in range(3):  # DFL's fixed weights take no gradient (frozen in both trainers)
        for a, b in trained:
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        mine.step(), package.step()
    for (key, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=key)
    assert not torch.equal(ours.model[0].conv.weight, DetectionModel("yolov8n.yaml", nc=2).model[0].conv.weight)
