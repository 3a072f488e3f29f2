"""Files named as images that are something else: prediction and ``check-data`` say what each looks like."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from yolotr.data.images import expand_source, iter_frames, read_image
from yolotr.data.sources import load_records
from yolotr.data.validation import UNREADABLE_IMAGE, inspect_image
from yolotr.errors import DataError
from yolotr.file_sniff import describe_non_image

# file name -> (content, what the message says it looks like; None: a damaged image, no guess)
IMPOSTORS = {
    "signin.jpg": (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n", "an HTML page"),
    "lfs.png": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "a Git LFS pointer"),
    "logo.png": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>\n', "an SVG drawing"),
    "iphone.jpg": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "a HEIC/HEIF photo"),
    "photo.jpg": (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64), "an AVIF image"),
    "scan.jpg": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(64), "a PDF document"),
    "batch.jpg": (b"PK\x03\x04" + bytes(64), "a zip archive"),
    "empty.jpg": (b"", "an empty file (0 bytes)"),
    "notes.jpg": (b"lr 0.01 worked best\n", "a text file (first line: 'lr 0.01 worked best')"),
    "damaged.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, None),
    "damaged.webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(range(256)), None),
    "noise.jpg": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), None),
}


@pytest.mark.parametrize("name", sorted(IMPOSTORS))
def test_prediction_and_check_data_say_what_a_non_image_looks_like(name, tmp_path):
    content, looks = IMPOSTORS[name]
    path = tmp_path / name
    path.write_bytes(content)
    described = describe_non_image(path)
    assert (described is None) if looks is None else described.startswith(looks), described
    with pytest.raises(DataError) as info:
        read_image(path)
    message = str(info.value)
    if looks is None:
        assert message == f"{path}: not a readable image (corrupt or unsupported format)"
    else:
        assert message.startswith(f"{path}: not a readable image: it looks like {looks}")
    h, w, problem = inspect_image(str(path))
    assert (h, w) == (0, 0) and problem.kind == UNREADABLE_IMAGE
    if looks is not None:
        assert problem.message == f"not a readable image: it looks like {described}, skipped"


def test_a_jpeg_cut_inside_its_headers_is_a_truncated_jpeg(tmp_path):
    """Cut before its pixels, OpenCV decodes nothing and PIL fails before it names the format: both readers
    call it what it is, as a JPEG cut later (which OpenCV decodes, the rest grey)."""
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(shared_path("images", "bus.jpg").read_bytes()[:600])
    with pytest.raises(DataError, match=r"cut.jpg: truncated JPEG \(no end marker\)$"):
        read_image(cut)
    assert inspect_image(str(cut))[2].message == "truncated JPEG (no end marker), skipped"


def test_a_whole_image_is_no_impostor_and_alpha_is_worded_as_an_image_with_alpha(tmp_path):
    whole = tmp_path / "bus.jpg"
    shutil.copy(shared_path("images", "bus.jpg"), whole)
    assert describe_non_image(whole) is None and read_image(whole).shape == (1080, 810, 3)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(rgba)
    assert inspect_image(str(rgba))[2].message == "image with alpha (RGBA) read as 8-bit RGB"
    grey = tmp_path / "grey.png"
    Image.new("LA", (8, 6)).save(grey)
    assert inspect_image(str(grey))[2].message == "greyscale image with alpha (LA) read as 8-bit RGB"


def test_a_video_that_is_a_web_page_says_so(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(IMPOSTORS["signin.jpg"][0])
    with pytest.raises(DataError, match=r"clip.mp4: cannot open video: it looks like an HTML page"):
        list(iter_frames(clip))
    clip.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(64))  # an MP4 start, then zeros
    with pytest.raises(DataError, match=r"clip.mp4: cannot open video: it looks like an MP4/MOV video with a damaged"):
        list(iter_frames(clip))


def test_an_mp4_cut_short_or_without_its_index_says_so(tmp_path):
    """Both read "cannot open video", as a video that is not there would."""
    whole = tmp_path / "whole.mp4"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    data = whole.read_bytes()
    assert len(list(iter_frames(whole))) == 5
    if data.find(b"moov") < data.find(b"mdat"):
        pytest.skip("this OpenCV writes the index (moov) before the frames")
    moov = data.index(b"moov") - 4
    cut, unfinished = tmp_path / "cut.mp4", tmp_path / "unfinished.mp4"
    cut.write_bytes(data[: moov // 2])
    unfinished.write_bytes(data[:moov])  # every box whole but the index, which recorders write last
    with pytest.raises(DataError, match=r"cut.mp4: cannot open video: .*MP4/MOV video cut short: its 'mdat' box runs"):
        list(iter_frames(cut))
    with pytest.raises(DataError, match=r"unfinished.mp4: .*MP4/MOV video without its index \(no 'moov' box\)"):
        list(iter_frames(unfinished))


def _photo(path) -> None:
    try:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    except (KeyError, OSError, ValueError) as e:  # a Pillow without that encoder
        pytest.skip(f"Pillow cannot write {path.suffix}: {e}")


def test_avif_and_jpeg_2000_are_read_and_heic_in_a_folder_is_named_not_silently_left_out(tmp_path, caplog):
    """The package reads .avif and .jp2 images; yolotr left them out of a folder without a word, as it still
    leaves out HEIC photos (OpenCV has no decoder), which it now names."""
    images = tmp_path / "set" / "images"
    images.mkdir(parents=True)
    for name in ("a.avif", "b.jp2", "c.png"):
        _photo(images / name)
    (images / "d.heic").write_bytes(IMPOSTORS["iphone.jpg"][0])
    (tmp_path / "set" / "labels").mkdir()
    for stem in "abcd":
        (tmp_path / "set" / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        files = expand_source(images)
    assert [p.name for p in files] == ["a.avif", "b.jp2", "c.png"]
    assert f"{images}: left out 1 .heic file(s), a format OpenCV" in caplog.text
    assert all(read_image(p).shape == (48, 64, 3) for p in files)
    data = tmp_path / "set" / "data.yaml"
    data.write_text(f"path: {tmp_path / 'set'}\ntrain: images\nval: images\nnames: [a]\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        records = load_records(data, "train", cache=False)[0]
    assert sorted(Path(r.path).name for r in records) == ["a.avif", "b.jp2", "c.png"]
    assert "left out 1 .heic file(s)" in caplog.text


def test_an_avif_this_opencv_cannot_decode_is_left_out_by_check_data(tmp_path, monkeypatch):
    path = tmp_path / "a.avif"
    _photo(path)
    assert inspect_image(str(path)) == (48, 64, None)
    monkeypatch.setattr(cv2, "haveImageReader", lambda _: False)  # an OpenCV build without an AVIF decoder
    h, w, problem = inspect_image(str(path))
    assert (h, w) == (0, 0) and problem.kind == UNREADABLE_IMAGE
    assert problem.message.startswith("AVIF image: this OpenCV (what training and prediction read images with) has no")
