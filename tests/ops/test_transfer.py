"""``to_device`` / ``device_tensor``: host tensors and values on a device without a stream-draining copy."""

from __future__ import annotations

import pytest
import torch

from yolotr.ops.transfer import device_tensor, to_device


def test_values_dtype_and_device_on_the_cpu_and_meta():
    t = device_tensor([[0, 0], [1, 0], [-1, 0]], torch.device("cpu"))
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert torch.equal(t, torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))
    assert device_tensor([3, 4], "cpu", dtype=torch.long).dtype == torch.long
    meta = device_tensor([1.0, 2.0], torch.device("meta"))
    assert meta.device.type == "meta" and meta.shape == (2,)
    host = torch.arange(3.0)
    assert to_device(host, "cpu") is host  # already there: no copy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copy_does_not_synchronise():
    torch.cuda.set_sync_debug_mode("error")
    try:
        t = device_tensor([1.5, 2.5, 3.5], torch.device("cuda"))
        moved = to_device(torch.arange(4), "cuda")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert t.cpu().tolist() == [1.5, 2.5, 3.5] and moved.cpu().tolist() == [0, 1, 2, 3]
