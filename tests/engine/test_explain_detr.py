"""``explain`` on RT-DETR's head layer (issue 28 item 5): the decoder's sampling points of one detection are the
locations its deformable attention really sampled, for the box the eval output gives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

from yolotr.cli import main
from yolotr.data.images import read_image
from yolotr.data.transforms import stretch
from yolotr.engine.explain import explain
from yolotr.engine.explain_detr import sampling_points
from yolotr.engine.predictor import preprocess
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn import deform_attn

from .test_rtdetr_engine import TINY_RTDETR

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny RT-DETR with perturbed decoder weights (a fresh init samples on a regular pattern)."""
    path = tmp_path_factory.mktemp("rtdetr-explain") / "tiny-rtdetr.yaml"
    path.write_text(yaml.safe_dump(TINY_RTDETR, sort_keys=False))
    torch.manual_seed(0)
    m = DetectionModel(str(path)).eval()
    with torch.no_grad():
        for layer in m.model[-1].decoder.layers:
            for lin in (layer.cross_attn.sampling_offsets, layer.cross_attn.attention_weights):
                lin.weight.normal_(0.0, 0.05)
    return m


def test_points_are_the_locations_the_last_layer_sampled(model, monkeypatch):
    x = torch.rand(1, 3, 96, 128)
    recorded = []
    real = deform_attn.deformable_sample

    def spy(value, shapes, locations, weights):
        recorded.append((locations.clone(), weights.clone()))
        return real(value, shapes, locations, weights)

    monkeypatch.setattr(deform_attn, "deformable_sample", spy)
    found = sampling_points(model, x, box=2)
    with torch.no_grad():
        detections, _ = model(x)
    head = model.model[-1]
    attn = head.decoder.layers[-1].cross_attn
    # two forwards (sampling_points', then this test's), each one call per decoder layer: the first one's last
    locations, weights = recorded[len(recorded) // 2 - 1]
    frame = np.array([128.0, 96.0], np.float32)
    np.testing.assert_allclose(found.points, locations[0, found.query].numpy() * frame, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(found.weights, weights[0, found.query].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(found.weights.sum(-1), 1.0, atol=1e-5)  # softmax per head over L * P
    assert found.points.shape == (attn.n_heads, attn.n_levels * attn.n_points, 2)
    assert found.points.std() > 1.0  # perturbed offsets: the points are spread, not stacked on the centre
    # the third detection of the eval output: same box, score and class
    np.testing.assert_allclose(found.box, detections[0, 2, :4].numpy(), rtol=1e-5, atol=1e-3)
    assert found.score == pytest.approx(float(detections[0, 2, 4]), rel=1e-5)
    assert found.cls == int(detections[0, 2, 5])


def test_explain_head_layer_draws_the_points_on_the_original_image(model, tmp_path):
    image = tmp_path / "wide.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8))
    head_layer = len(model.model) - 1
    rows, path = explain(model, image, head_layer, imgsz=128, save_path=tmp_path / "points.png")
    attn = model.model[-1].decoder.layers[-1].cross_attn
    assert path.is_file() and path.stat().st_size > 10_000
    assert rows.shape == (attn.n_heads * attn.n_levels * attn.n_points, 5)
    assert set(np.unique(rows[:, 2])) == set(range(attn.n_levels)) and set(np.unique(rows[:, 3])) == set(range(4))
    # the same points on the input RT-DETR predicts from (the 128 x 128 square: the 200 x 90 image stretched by
    # 0.64 across and 1.42 down, as the package feeds it), mapped back to the image's pixels axis by axis
    boxed, ratio, pad = stretch(read_image(image), 128)
    assert boxed.shape[:2] == (128, 128) and pad == (0.0, 0.0)
    found = sampling_points(model, preprocess([boxed], torch.device("cpu"), torch.float32))
    np.testing.assert_allclose(rows[:, :2], found.points.reshape(-1, 2) / np.array([0.64, 128 / 90]), rtol=1e-5)
    assert (found.points.reshape(-1, 2) / np.array(ratio) != found.points.reshape(-1, 2) / ratio[0]).any()
    with pytest.raises(ConfigError, match="--box 9999"):
        explain(model, image, head_layer, imgsz=128, save_path=tmp_path / "x.png", box=9999)


def test_cli_draws_a_chosen_box_and_names_the_decoder_layer_when_out_of_range(model, tmp_path, capsys):
    spec = tmp_path / "tiny-rtdetr.yaml"
    spec.write_text(yaml.safe_dump(TINY_RTDETR, sort_keys=False))
    image = tmp_path / "im.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    head_layer = len(model.model) - 1
    out = tmp_path / "box3.png"
    args = ["explain", "--model", str(spec), "--source", str(image), "--imgsz", "64", "--out", str(out)]
    assert main([*args, "--layer", str(head_layer), "--box", "3"]) == 0
    assert out.is_file() and f"map of layer {head_layer} saved to {out}" in capsys.readouterr().out
    assert main([*args, "--layer", str(head_layer + 1)]) != 0
    assert f"or the decoder's sampling points (layer {head_layer})" in capsys.readouterr().err


def test_aifi_attention_and_grad_cam_of_other_layers(model, tmp_path):
    """Every layer but the head failed: Grad-CAM read RT-DETR's output as an anchor head's (TypeError on its
    None), and AIFI's batch-first attention was refused with a TypeError."""
    import copy

    from yolotr.engine.explain import attention_modules, capture_attention

    from .test_explain import check_faithful, check_heatmap

    model = copy.deepcopy(model)  # BatchNorm statistics from one batch: at init they flatten every map
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 128, 128))
    model.eval()
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (90, 140, 3), dtype=np.uint8))
    (aifi,) = attention_modules(model.model[9])
    assert aifi.batch_first
    check_faithful(capture_attention(model, torch.rand(1, 3, 128, 128), aifi))
    for layer in (9, 3, 15):  # AIFI's attention; Grad-CAM of a backbone block and of a neck conv
        heat, path = explain(model, image, layer, imgsz=128, save_path=tmp_path / f"layer{layer}.png")
        check_heatmap(heat, (90, 140))
        assert path.is_file()
