"""Haar wavelet downsampling against pytorch_wavelets, odd sizes, dtypes, memory formats, export."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from yolotr.nn.conv import fuse_conv_and_bn
from yolotr.nn.wavelet import HWD, HaarDWT

IMAGE_SIZES = [(320, 320), (352, 352), (416, 416), (384, 640), (640, 640)]


@pytest.fixture(scope="module")
def dwt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch_wavelets imports the deprecated pkg_resources
        pw = pytest.importorskip("pytorch_wavelets", reason="pytorch_wavelets is a dev extra (pip install -e .[dev])")
    return pw.DWTForward(J=1, wave="haar", mode="zero")


def reference(dwt, x: torch.Tensor) -> torch.Tensor:
    yl, yh = dwt(x)
    return torch.cat([yl, yh[0][:, :, 0], yh[0][:, :, 1], yh[0][:, :, 2]], dim=1)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 5, 16, 6), (3, 1, 2, 2), (1, 4, 20, 34)])
def test_matches_pytorch_wavelets_on_even_sizes(dwt, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = HaarDWT(shape[1])(x)
    assert ours.shape == (shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2)
    torch.testing.assert_close(ours, reference(dwt, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 2, 7, 7), (2, 3, 5, 8), (1, 1, 6, 3), (1, 2, 1, 1)])
def test_odd_sizes_zero_pad_right_and_bottom(dwt, shape):
    """Defined behaviour: pad one zero row/column at the bottom/right; output ceil(H/2) x ceil(W/2)."""
    b, c, h, w = shape
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    ours = HaarDWT(c)(x)
    assert ours.shape == (b, 4 * c, (h + 1) // 2, (w + 1) // 2)
    torch.testing.assert_close(ours, HaarDWT(c)(F.pad(x, (0, w % 2, 0, h % 2))), atol=0, rtol=0)
    torch.testing.assert_close(ours, reference(dwt, x), atol=1e-6, rtol=0)


def test_band_layout_and_energy():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1, 1, 0] = 1.0  # channel 1, bottom-left pixel
    y = HaarDWT(2)(x).flatten()
    # bands [LL, D0, D1, D2] of 2 channels each; bottom-left is (+, -, +, -) / 2 in pytorch_wavelets' signs
    torch.testing.assert_close(y, torch.tensor([0, 0.5, 0, -0.5, 0, 0.5, 0, -0.5]), atol=1e-7, rtol=0)
    x = torch.randn(2, 3, 10, 12)
    torch.testing.assert_close(HaarDWT(3)(x).square().sum(), x.square().sum())  # orthonormal: lossless


def test_follows_input_dtype_and_memory_format():
    m = HaarDWT(4)
    x = torch.randn(2, 4, 8, 10)
    y = m(x)
    assert m(x.bfloat16()).dtype == torch.bfloat16
    torch.testing.assert_close(m(x.bfloat16()).float(), y, atol=0.05, rtol=0.02)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), y, atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert HWD(4, 8)(x).dtype == torch.bfloat16
    assert "weight" not in m.state_dict() and m.weight.shape == (16, 1, 2, 2)


def test_hwd_keys_shapes_and_gradients():
    m = HWD(8, 16)
    assert sorted(k for k in m.state_dict() if "conv" in k) == [
        "conv.bn.bias",
        "conv.bn.num_batches_tracked",
        "conv.bn.running_mean",
        "conv.bn.running_var",
        "conv.bn.weight",
        "conv.conv.weight",
    ]
    assert m.conv.conv.weight.shape == (16, 32, 1, 1)
    x = torch.randn(2, 8, 9, 14, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 16, 5, 7)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.conv.conv.weight.grad).all()


@pytest.mark.parametrize("hw", [(8, 10), (7, 9)])
def test_hwd_equals_conv_over_the_bands(hw):
    """The folded 2x2 convolution is ``conv(cat(bands))``, in training and eval, and after BN fusion."""
    torch.manual_seed(0)
    m = HWD(6, 12)
    x = torch.randn(2, 6, *hw)
    torch.testing.assert_close(m(x), m.conv(m.transform(x)), atol=1e-5, rtol=1e-5)
    m.eval()
    with torch.no_grad():
        m.conv.bn.running_mean.uniform_(-1, 1)
        m.conv.bn.running_var.uniform_(0.5, 2)
        ref = m.conv(m.transform(x))
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
        m.conv.conv = fuse_conv_and_bn(m.conv.conv, m.conv.bn)
        del m.conv.bn
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("imgsz", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_hwd_shapes(imgsz):
    m = HWD(3, 8).eval()
    with torch.no_grad():
        for stride in (2, 16):
            h, w = imgsz[0] // stride, imgsz[1] // stride
            assert m(torch.randn(1, 3, h, w)).shape == (1, 8, (h + 1) // 2, (w + 1) // 2)


def test_onnx_export(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed")
    m = HWD(3, 8).eval()
    path = tmp_path / "hwd.onnx"
    torch.onnx.export(m, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    x = torch.randn(1, 3, 16, 16)
    session = ort.InferenceSession(str(path))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out[0]), m(x), atol=1e-5, rtol=1e-5)
