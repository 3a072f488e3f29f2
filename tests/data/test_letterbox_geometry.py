"""The letterbox's geometry read back exactly: the padding it reports is the padding it added, labels land on
the pixels they name, and ``scale_boxes`` / the validator's ``to_original`` invert it to float precision.

YOLOv5 reports the unrounded half padding (5.5 where 5 columns were added) and inverts with one gain, which
puts labels and mapped-back boxes up to half an input pixel off the image; at 320 px that is up to a pixel of
a 600 px photo, which mAP50-95 of small objects feels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolotr.data.dataset import DetectionDataset
from yolotr.data.transforms import letterbox
from yolotr.data.validation import ImageRecord
from yolotr.engine.validator import to_original
from yolotr.ops.boxes import scale_boxes

# (h0, w0), new_shape, auto: sizes whose padding is odd on one axis, and a resize that rounds each side
CASES = [((399, 600), 320, True), ((390, 570), 416, True), ((417, 650), 640, False), ((195, 259), 640, True)]
CASES += [((101, 67), 96, False), ((720, 1280), 640, True), ((360, 640), (256, 320), False)]


def _marked(h0: int, w0: int) -> np.ndarray:
    image = np.full((h0, w0, 3), 255, np.uint8)
    image[:, :, 1] = 0  # magenta: nothing in the padding (114 grey) looks like it
    return image


@pytest.mark.parametrize(("shape0", "new_shape", "auto"), CASES)
def test_reported_padding_is_where_the_image_starts(shape0, new_shape, auto) -> None:
    boxed, (r, _), (left, top) = letterbox(_marked(*shape0), new_shape, auto=auto, stride=32)
    content = np.argwhere(boxed[..., 1] < 57)  # not the grey padding
    (y0, x0), (y1, x1) = content.min(0), content.max(0) + 1
    assert (left, top) == (x0, y0) and float(left).is_integer() and float(top).is_integer()
    assert (y1 - y0, x1 - x0) == (max(round(shape0[0] * r), 1), max(round(shape0[1] * r), 1))


@pytest.mark.parametrize(("shape0", "new_shape", "auto"), CASES)
def test_scale_boxes_inverts_the_letterbox(shape0, new_shape, auto) -> None:
    """Boxes through the letterbox's own geometry and back: the original pixels to 1e-3 (the old derivation
    was up to 0.5 / r off)."""
    h0, w0 = shape0
    boxed, (r, _), (left, top) = letterbox(_marked(h0, w0), new_shape, auto=auto, stride=32)
    new_h, new_w = max(round(h0 * r), 1), max(round(w0 * r), 1)
    original = torch.tensor([[0.0, 0.0, w0, h0], [w0 * 0.25, h0 * 0.5, w0 * 0.75, h0 * 0.9]], dtype=torch.float64)
    forward = original.clone()
    forward[:, [0, 2]] = forward[:, [0, 2]] * new_w / w0 + left
    forward[:, [1, 3]] = forward[:, [1, 3]] * new_h / h0 + top
    back = scale_boxes(boxed.shape[:2], forward.clone(), shape0)
    torch.testing.assert_close(back, original, atol=1e-3, rtol=0)


def test_dataset_labels_land_on_the_pixels_they_name(tmp_path) -> None:
    """A validation item of a 600 x 399 image letterboxed to 320 (5 rows added above, 6 below): the label of
    a box drawn in the photo names the rows and columns the box occupies in the input; mapped back through
    the item's ``shapes`` it is the original box."""
    import cv2

    h0, w0 = 399, 600
    image = np.full((h0, w0, 3), 200, np.uint8)
    image[100:300, 150:450] = 0
    cv2.imwrite(str(tmp_path / "a.png"), image)
    record = ImageRecord(str(tmp_path / "a.png"), h0, w0, np.array([[150, 100, 450, 300]], np.float32), np.array([0]))
    dataset = DetectionDataset([record], imgsz=320, augment=False, rect=True, batch_size=1, stride=32)
    chw, labels, _, shapes = dataset[0]
    h, w = chw.shape[1:]
    box = labels[0, 2:].double() * torch.tensor([w, h, w, h])
    xyxy = torch.cat((box[:2] - box[2:] / 2, box[:2] + box[2:] / 2))
    dark = np.argwhere(chw[0].numpy() < 100)
    (y0, x0), (y1, x1) = dark.min(0), dark.max(0) + 1
    torch.testing.assert_close(xyxy, torch.tensor([x0, y0, x1, y1], dtype=torch.float64), atol=0.6, rtol=0)
    assert shapes[1][1] == (0.0, 5.0)  # the rows added above, not the unrounded 5.5
    back = to_original(xyxy[None].clone(), shapes)
    want = torch.tensor([[150.0, 100.0, 450.0, 300.0]], dtype=torch.float64)
    torch.testing.assert_close(back, want, atol=1e-3, rtol=0)
