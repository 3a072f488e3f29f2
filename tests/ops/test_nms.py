"""Multi-label NMS (the validators of YOLOv5 and ``ultralytics``) against best-class NMS (prediction)."""

import torch

from yolotr.ops.boxes import non_max_suppression


def _anchor_free_output() -> torch.Tensor:
    """(1, 3, 4 + 2): one box scoring on both classes, a near duplicate of it, one far box."""
    return torch.tensor([[[50, 50, 20, 20, 0.6, 0.5], [51, 50, 20, 20, 0.55, 0.1], [150, 150, 30, 30, 0.0005, 0.3]]])


def test_multi_label_keeps_a_box_once_per_class_above_conf():
    decoded = _anchor_free_output()
    single = non_max_suppression(decoded, 0.001, 0.45, nc=2)[0]
    multi = non_max_suppression(decoded, 0.001, 0.45, nc=2, multi_label=True)[0]
    assert [(round(float(s), 4), int(c)) for s, c in single[:, 4:]] == [(0.6, 0), (0.3, 1)]
    # the first box also stands for class 1 (0.5); its duplicate's class-1 score (0.1) is suppressed
    assert [(round(float(s), 4), int(c)) for s, c in multi[:, 4:]] == [(0.6, 0), (0.5, 1), (0.3, 1)]
    assert torch.equal(multi[0, :4], multi[1, :4])


def test_multi_label_with_objectness_and_class_filter():
    # YOLOv5 columns: objectness 0.8 times class probabilities 0.9 / 0.5
    decoded = torch.tensor([[[50, 50, 20, 20, 0.8, 0.9, 0.5], [150, 150, 20, 20, 0.0005, 0.9, 0.9]]])
    multi = non_max_suppression(decoded, 0.001, 0.45, multi_label=True)[0]
    assert torch.allclose(multi[:, 4], torch.tensor([0.72, 0.4])) and multi[:, 5].tolist() == [0.0, 1.0]
    only_one = non_max_suppression(decoded, 0.001, 0.45, classes=[1], multi_label=True)[0]
    assert only_one[:, 5].tolist() == [1.0] and torch.allclose(only_one[:, 4], torch.tensor([0.4]))


def test_max_det_caps_the_multi_label_output():
    decoded = torch.rand(1, 500, 4 + 5) * torch.tensor([640, 640, 40, 40, 1, 1, 1, 1, 1])
    out = non_max_suppression(decoded, 0.001, 0.45, nc=5, multi_label=True, max_det=37)[0]
    assert out.shape == (37, 6) and bool((out[:-1, 4] >= out[1:, 4]).all())
