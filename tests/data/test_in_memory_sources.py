"""Sources a user passes to ``predict`` besides plain paths: file names with glob characters, PIL images
(EXIF orientation, 16-bit grey) and torch tensors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolotr.data.images import array_frame, expand_source, iter_frames
from yolotr.errors import DataError


def test_an_existing_file_with_brackets_in_its_name_is_that_file_not_a_glob(tmp_path):
    cv2.imwrite(str(tmp_path / "shot[1].jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "shot1.jpg"), np.full((8, 8, 3), 255, np.uint8))  # what the glob matches
    assert expand_source(tmp_path / "shot[1].jpg") == [tmp_path / "shot[1].jpg"]
    assert expand_source(str(tmp_path / "shot[0-9].jpg")) == [tmp_path / "shot1.jpg"]  # a pattern still globs


def test_a_pil_image_is_turned_upright_by_its_exif_orientation_as_its_file_is(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "exif6.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    from_pil = array_frame(Image.open(path)).image
    from_file = next(iter(iter_frames(path))).image
    assert from_pil.shape == from_file.shape == (40, 20, 3)
    assert np.abs(from_pil.astype(int) - from_file.astype(int)).max() <= 2  # the same decoder's pixels
    assert from_pil[:10].mean() > 200 and from_pil[-10:].mean() < 50  # the band is on top once upright


def test_a_16_bit_pil_image_keeps_its_top_8_bits():
    deep = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    image = Image.fromarray(deep)
    assert image.mode.startswith("I")  # I;16 (Pillow >= 10), I before
    frame = array_frame(image).image
    assert frame.shape == (64, 64, 3) and np.array_equal(frame[..., 0], (deep >> 8).astype(np.uint8))


def test_a_32_bit_pil_image_of_8_bit_values_keeps_them():
    """``Image.fromarray`` of an int array of 0..255 and ``convert("I")`` of an 8-bit image give mode ``I``; its
    values were shifted right by 8, a black frame predicted on (no detections, no warning)."""
    grey = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 256
    for image in (Image.fromarray(grey.astype(np.int32)), Image.fromarray(grey.astype(np.uint8)).convert("I")):
        assert image.mode == "I"
        assert np.array_equal(array_frame(image).image[..., 0], grey.astype(np.uint8))
    wide = Image.fromarray((grey * 4096).astype(np.int32))  # 20 bits used: their top 8 (a shift by 24 gave 0)
    assert np.array_equal(array_frame(wide).image[..., 0], grey.astype(np.uint8))


def test_a_tensor_batch_is_one_frame_per_image():
    batch = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    frames = list(iter_frames(batch))
    assert [f.path for f in frames] == ["image0.jpg", "image1.jpg"]
    expected = (batch[1] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # RGB, as frames hold
    assert np.array_equal(frames[1].image, expected)
    with pytest.raises(DataError, match=r"values in \[0, 1\] \(not 0-255\)"):
        list(iter_frames(batch * 255))
    with pytest.raises(DataError, match=r"float \(B, 3, H, W\)"):
        list(iter_frames(torch.zeros(2, 16, 24, 3)))


def test_an_unreadable_file_beside_an_array_is_skipped_as_in_a_list_of_files(tmp_path, caplog):
    broken = tmp_path / "zero.jpg"
    broken.write_bytes(b"")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 8, 3), np.uint8))
    frames = list(iter_frames([np.zeros((4, 4, 3), np.uint8), str(broken), str(good)]))
    assert [f.path for f in frames] == ["image0.jpg", str(good)]
    assert "zero.jpg" in caplog.text and "skipped" in caplog.text
    with pytest.raises(DataError, match="no such file"):
        list(iter_frames([np.zeros((4, 4, 3), np.uint8), str(tmp_path / "missing.jpg")]))


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), 90, np.uint8))
    return path


def test_a_list_file_names_files_folders_and_globs_beside_it_or_from_the_working_directory(tmp_path, monkeypatch):
    """As the package's ``.txt`` sources: a folder and a glob line expand, and a line relative to the working
    directory is found too (``srcs/dir/a.jpg`` in ``srcs/list.txt``, run from above ``srcs``)."""
    a, b, c = (_photo(tmp_path / "srcs" / "dir" / n) for n in ("a.jpg", "b.jpg", "c.png"))
    d = _photo(tmp_path / "srcs" / "more" / "d.jpg")
    listing = tmp_path / "srcs" / "list.txt"
    listing.write_text("srcs/dir/a.jpg\nmore\n# a comment\ndir/*.png\n")
    monkeypatch.chdir(tmp_path)
    assert [p.resolve() for p in expand_source(listing)] == [a, d, c]
    listing.write_text("dir/b.jpg\n")
    assert expand_source(listing) == [b]


@pytest.mark.parametrize(
    ("line", "message"),
    [("gone.jpg", "list.txt:2: gone.jpg: no such file, folder or glob match .looked for beside the list"),
     ("empty", "list.txt:2: .*no images or videos"), ("other.txt", "a list inside a list")],
)  # fmt: skip
def test_a_list_line_that_names_nothing_is_named(tmp_path, line, message):
    _photo(tmp_path / "a.jpg")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other.txt").write_text("a.jpg\n")
    (tmp_path / "list.txt").write_text(f"a.jpg\n{line}\n")
    with pytest.raises(DataError, match=message):
        expand_source(tmp_path / "list.txt")


@pytest.mark.parametrize(
    ("source", "message"),
    [("https://ultralytics.com/images/bus.jpg", "a URL or stream"), ("rtsp://cam/1", "a URL or stream"),
     ("0", "webcam streams are not read"), ("screen", "screen capture is not read"),
     (b"\xff\xd8\xff" * 100, "a source of 300 bytes: decode it first")],
)  # fmt: skip
def test_sources_yolotr_does_not_read_say_so(source, message):
    with pytest.raises(DataError, match=message):
        expand_source(source)
