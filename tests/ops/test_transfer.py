"""``device_tensor``: host values on a device without a stream-draining copy (values, dtype, device)."""

from __future__ import annotations

import pytest
import torch

from yolotr.ops.transfer import device_tensor


def test_values_dtype_and_device_on_the_cpu_and_meta():
    t = device_tensor([[0, 0], [1, 0], [-1, 0]], torch.device("cpu"))
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert torch.equal(t, torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))
    assert device_tensor([3, 4], "cpu", dtype=torch.long).dtype == torch.long
    meta = device_tensor([1.0, 2.0], torch.device("meta"))
    assert meta.device.type == "meta" and meta.shape == (2,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copy_does_not_synchronise():
    torch.cuda.set_sync_debug_mode("error")
    try:
        t = device_tensor([1.5, 2.5, 3.5], torch.device("cuda"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert t.cpu().tolist() == [1.5, 2.5, 3.5]
