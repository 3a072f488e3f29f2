"""ModelEMA: the YOLOv5 formula, integer buffers copied, and the cached pairing of tensors kept honest."""

import copy
import math

import torch
from torch import nn

from yolotr.engine.ema import ModelEMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _expected(ema_before: dict, model: nn.Module, d: float) -> dict:
    """``d * ema + (1 - d) * model`` key by key, as ``ema.lerp_(model, 1 - d)`` (the package's, bit for bit)."""
    return {
        k: v.clone().lerp_(model.state_dict()[k], 1 - d) if v.dtype.is_floating_point else model.state_dict()[k]
        for k, v in ema_before.items()
    }


def test_update_is_the_decayed_average_and_copies_integer_buffers():
    model = _model()
    ema = ModelEMA(model, decay=0.9, tau=3)
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.rand(2, 3, 8, 8))  # moves the BN statistics and num_batches_tracked
        before = copy.deepcopy(ema.ema.state_dict())
        ema.update(model)
        d = 0.9 * (1 - math.exp(-step / 3))
        for key, value in _expected(before, model, d).items():
            assert torch.equal(ema.ema.state_dict()[key], value), key
    assert int(ema.ema[1].num_batches_tracked) == 3


def test_a_model_whose_tensors_were_replaced_is_read_afresh():
    model = _model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    ema.update(model)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.fill_(1.0)
    other.load_state_dict(other.state_dict())
    before = copy.deepcopy(ema.ema.state_dict())
    ema.update(other)  # a different model object: its tensors, not the first model's
    weight = "0.weight"
    torch.testing.assert_close(ema.ema.state_dict()[weight], before[weight] * 0.5 + 0.5)


def test_a_replaced_buffer_is_read_afresh():
    model = _model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)
    ema.update(model)
    model[1].running_mean = torch.full((4,), 8.0)  # a new tensor, not an in-place change
    before = ema.ema[1].running_mean.clone()
    ema.update(model)
    assert torch.equal(ema.ema[1].running_mean, before * 0.5 + 4.0)


def test_a_parameter_moved_to_new_storage_is_read_afresh():
    """``.to()`` keeps each Parameter object and gives it new storage (``param.data = ...``): the cached
    pairing notices by address, without walking the module tree."""
    model = _model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)
    ema.update(model)
    weight = model[0].weight
    weight.data = torch.full_like(weight, 2.0)  # the same Parameter, another tensor behind it
    before = ema.ema[0].weight.clone()
    ema.update(model)
    assert model[0].weight is weight
    torch.testing.assert_close(ema.ema[0].weight, before * 0.5 + 1.0)
