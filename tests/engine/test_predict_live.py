"""``YOLO.predict`` against the ``ultralytics`` package's predictor, live, on photos of other shapes than the
oracle's: the end-to-end heads' detections as sets (boxes to 0.1 px of the photo, float order moving them up
to 0.07 px; scores to 1e-3), at square and stride-aligned rectangular inputs whose letterbox padding is odd on
one axis (where boxes mapped back with YOLOv5's unrounded half padding were up to 1.1 px off).

The one-to-many branch with NMS is not compared here: the rule-made checkpoints saturate hundreds of scores at
1.0, and which of those tied boxes NMS keeps depends on the order of a sort, in either package.

Skipped without the package (a bench extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import pytest

from tests.conftest import assert_same_detections, shared_path

pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# photo, imgsz: 399x600 at 320 (11 rows of padding: 5 above), 390x570 at 416, 417x650 at 640, 360x640 at 320
PHOTOS = [("raccoon-121.jpg", 320), ("raccoon-144.jpg", 416), ("raccoon-1.jpg", 640), ("raccoon-77.jpg", 320)]


@pytest.mark.parametrize(("photo", "imgsz"), PHOTOS)
@pytest.mark.parametrize("weights", ["yolov10n_rule.pt", "yolo26n_rule.pt"])
def test_end_to_end_detections_equal_the_package_on_photos(weights: str, photo: str, imgsz: int) -> None:
    from ultralytics import YOLO as PackageYOLO

    from yolotr import YOLO

    path, image = shared_path("reference", "ultralytics-next", weights), shared_path("data", "raccoon", "images", photo)
    ours = YOLO(str(path)).predict(str(image), imgsz=imgsz, conf=0.0, max_det=300, backend="torch")[0]
    theirs = PackageYOLO(str(path)).predict(str(image), imgsz=imgsz, conf=0.0, max_det=300, nms=False, verbose=False)[0]
    assert_same_detections(ours, theirs, box_px=0.1, score_atol=1e-3)
