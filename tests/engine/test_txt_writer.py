"""One YOLO txt writer: ``yolotr predict --save-txt`` (PredictionWriter) writes through ``Results.save_txt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from yolotr.data.images import Frame
from yolotr.engine.predictor import PredictionWriter
from yolotr.engine.results import Boxes, Results


def a_result(path: str = "pic.jpg", frame: int | None = None) -> Results:
    image = np.zeros((100, 200, 3), np.uint8)  # h 100, w 200
    data = torch.tensor([[20.0, 10.0, 60.0, 50.0, 0.91234, 1.0], [100.0, 0.0, 200.0, 100.0, 0.5, 0.0]])
    return Results(image, path, Boxes(data, (100, 200)), ["a", "b"], (96, 192), frame)


@pytest.mark.parametrize("save_conf", [False, True])
def test_writer_saves_labels_through_results_save_txt(tmp_path, monkeypatch, save_conf):
    calls = []
    original = Results.save_txt

    def spy(self, path, save_conf=False):
        calls.append((path, save_conf))
        return original(self, path, save_conf)

    monkeypatch.setattr(Results, "save_txt", spy)
    writer = PredictionWriter(tmp_path, save_txt=True, save_images=False, save_conf=save_conf)
    result = a_result()
    writer.add(Frame(result.orig_img, "pic.jpg"), result)
    writer.add(Frame(result.orig_img, "clip.mp4", frame=3), a_result("clip.mp4", 3))
    writer.close()
    # frame 3 counted from 0 is the package's clip_4: its file names number frames from 1
    assert calls == [(tmp_path / "labels" / "pic.txt", save_conf), (tmp_path / "labels" / "clip_4.txt", save_conf)]
    first = "1 0.200000 0.300000 0.200000 0.400000"
    second = "0 0.750000 0.500000 0.500000 1.000000"
    want = f"{first} 0.91234\n{second} 0.50000\n" if save_conf else f"{first}\n{second}\n"
    assert (tmp_path / "labels" / "pic.txt").read_text() == want
    assert (tmp_path / "labels" / "clip_4.txt").read_text() == want


def test_a_video_frames_default_file_is_an_image_named_by_its_frame(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert a_result("clip.mp4", 3).save() == Path("results_clip_4.jpg") and (tmp_path / "results_clip_4.jpg").is_file()
    with pytest.raises(OSError, match=r"\.mp4 is not an image format"):
        a_result().save(tmp_path / "out.mp4")


def test_files_of_one_name_from_other_folders_keep_their_own_outputs(tmp_path):
    """a/x.jpg, b/x.jpg and a/x.png overwrote each other's image and label files: each source file keeps a
    stem of its own for the run (x, x_2, x_3), every frame of one file the same."""
    writer = PredictionWriter(tmp_path, save_txt=True, save_images=True)
    sources = ["a/x.jpg", "b/x.jpg", "a/x.png", "b/x.jpg"]
    for path in sources:
        writer.add(Frame(np.zeros((100, 200, 3), np.uint8), path), a_result(path))
    writer.close()
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["x.txt", "x_2.txt", "x_3.txt"]
    assert {"x.jpg", "x_2.jpg", "x_3.png"} <= {p.name for p in tmp_path.iterdir()}
