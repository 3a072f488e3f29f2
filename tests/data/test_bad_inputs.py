"""Inputs QA found mishandled: VOC parts, COCO JSON shapes, dataset YAML values, list files, BOMs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolotr.data.images import expand_source
from yolotr.data.sources import load_dataset_config, load_records
from yolotr.errors import DataError


def _image(folder: Path, name: str = "a.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (40, 80, 120)).save(folder / name)
    return folder / name


def _box(x1: int, y1: int, x2: int, y2: int) -> str:
    return f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"


def test_voc_object_parts_are_ignored(tmp_path):
    """A VOC person's <part> children (head, hand) have names and boxes of their own."""
    _image(tmp_path / "images")
    (tmp_path / "annotations").mkdir()
    part = "<part><name>{}</name>{}</part>"
    obj = (
        "<object>"
        + part.format("hand", _box(2, 2, 6, 6))
        + "<name>person</name><pose>Left</pose>"
        + _box(11, 6, 40, 40)
        + part.format("head", _box(20, 10, 30, 20))
        + "</object>"
    )
    (tmp_path / "annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{obj}</annotation>")
    data = {"path": str(tmp_path), "train": "images", "names": ["person", "head", "hand"], "format": "voc"}
    (record,), report = load_records(data, "train", cache=False)
    assert report.problems == []
    np.testing.assert_array_equal(record.classes, [0])
    np.testing.assert_allclose(record.boxes, [[10, 5, 40, 40]])


@pytest.mark.parametrize(
    ("size", "box", "message"),
    [
        ((128, 96), [10, 5, 40, 40], "resized?): boxes scaled to the image"),  # annotated at twice the size
        ((48, 64), [20, 10, 80, 80], "turned?): boxes used as given"),
        ((64, 48), [20, 10, 80, 80], None),
    ],
)
def test_voc_size_that_is_not_the_image_size(tmp_path, size, box, message):
    """Boxes drawn on a photo then resized to half were read at the old scale, with no word when they still fit;
    the package's converter normalises by <size>."""
    _image(tmp_path / "images")  # 64x48
    (tmp_path / "annotations").mkdir()
    xml = f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    xml += f"<object><name>cat</name>{_box(21, 11, 80, 80)}</object></annotation>"
    (tmp_path / "annotations" / "a.xml").write_text(xml)
    data = {"path": str(tmp_path), "train": "images", "names": ["cat"], "format": "voc"}
    (record,), report = load_records(data, "train", cache=False)
    np.testing.assert_allclose(record.boxes, [[min(v, lim) for v, lim in zip(box, (64, 48, 64, 48))]])
    said = [p.message for p in report.problems if "<size>" in p.message]
    assert (said and message in said[0]) if message else not said


def test_a_voc_annotation_that_is_a_broken_link_is_an_error(tmp_path):
    _image(tmp_path / "images")
    _image(tmp_path / "images", "b.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").symlink_to(tmp_path / "gone.xml")
    data = {"path": str(tmp_path), "train": "images", "names": ["cat"], "format": "voc"}
    records, report = load_records(data, "train", cache=False)
    assert [Path(r.path).name for r in records] == ["b.jpg"]  # a.jpg was trained as a background
    assert any("a.xml" in p.file and "broken link" in p.message for p in report.problems)


def _coco(tmp_path: Path, change) -> dict:
    """A one-image instances JSON, changed by ``change(data)``, and its dataset dict."""
    _image(tmp_path / "images")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [8, 8, 20, 16], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "cat"}],
    }
    change(data)
    (tmp_path / "train.json").write_text(json.dumps(data))
    return {"path": str(tmp_path), "train": "train.json", "names": ["cat"]}


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["categories"][0].pop("name"), r"train.json: categories\[0\]: no 'name'"),
        (lambda d: d["annotations"].append(5), r"train.json: annotations\[1\]: expected an object"),
        (lambda d: d.update(images={"1": d["images"][0]}), r"train.json: key 'images': expected a list"),
        (lambda d: d["images"][0].pop("file_name"), r"train.json: images\[0\] \(id 1\): key 'file_name'"),
        (lambda d: d["images"].append({"id": 1, "file_name": "a.jpg"}), r"train.json: images\[1\]: id 1 is also"),
        (lambda d: d["annotations"][0].update(image_id=[1]), r"train.json: annotations\[0\]: key 'image_id'"),
    ],
)
@pytest.mark.parametrize("names", [True, False])
def test_coco_shape_errors_name_the_file_entry_and_key(tmp_path, change, match, names):
    data = _coco(tmp_path, change)
    if not names:
        del data["names"]  # the categories give the names
    with pytest.raises(DataError, match=match):
        load_records(data, "train", cache=False)


def test_coco_without_annotations_warns(tmp_path):
    records, report = load_records(_coco(tmp_path, lambda d: d.pop("annotations")), "train", cache=False)
    assert [len(r.boxes) for r in records] == [0]
    (problem,) = report.problems
    assert problem.severity == "warning" and "no 'annotations' key" in problem.message


def test_coco_non_integer_iscrowd_is_an_error(tmp_path):
    data = _coco(tmp_path, lambda d: d["annotations"][0].update(iscrowd="no"))
    with pytest.raises(DataError, match="annotation id 1: iscrowd must be 0 or 1, got 'no'"):
        load_records(data, "train", cache=False)
    records, report = load_records(_coco(tmp_path, lambda d: d["annotations"][0].update(iscrowd=1)), "train")
    assert [len(r.boxes) for r in records] == [0] and report.problems == []  # a crowd box is skipped


@pytest.mark.parametrize(
    "text, match",
    [
        ("names: [[raccoon]]", r"key 'names\[0\]': a class name must be a string"),
        ("names: [raccoon, null]", r"key 'names\[1\]'"),
        ("names: [raccoon, no]", r"key 'names\[1\]'.*quote"),
        ("names: {0: raccoon, 1: ''}", r"key 'names\[1\]': empty"),
        ("names: {0: a, x: b}", r"key 'names': ids must be integers"),
        ("names: [raccoon, raccoon]", r"key 'names': 'raccoon' is both class 0 and class 1"),
        ("nc: true", r"key 'nc'"),
        ("names: [a]\npath: 5", r"key 'path': expected a path"),
        ("names: [a]\nimages: [x]", r"key 'images': expected a path"),
        ("names: [a]\nval: ''", r"key 'val': an empty path"),
        ("names: [a]\nval: [val.txt, ' ']", r"key 'val': an empty path"),
    ],
)
def test_config_values_name_their_key(tmp_path, text, match):
    (tmp_path / "d.yaml").write_text(f"train: images\n{text}\n")
    with pytest.raises(DataError, match=r"d\.yaml: " + match):
        load_dataset_config(tmp_path / "d.yaml")


def test_numeric_names_are_strings(tmp_path):
    (tmp_path / "d.yaml").write_text("train: images\nnames: [0, 1]\n")
    assert load_dataset_config(tmp_path / "d.yaml").names == ["0", "1"]


def test_prediction_list_skips_comments_and_names_missing_lines(tmp_path):
    image = _image(tmp_path / "images")
    (tmp_path / "list.txt").write_text("# the photos\nimages/a.jpg\n\n  # indented comment\n")
    assert expand_source(tmp_path / "list.txt") == [image]
    (tmp_path / "list.txt").write_text("# the photos\nimages/a.jpg\nimages/missing.jpg\n")
    with pytest.raises(DataError, match=r"list\.txt:3: .*missing\.jpg: no such file"):
        expand_source(tmp_path / "list.txt")


@pytest.mark.parametrize("source", ["", "  ", ["a.jpg", ""]])
def test_an_empty_source_is_refused_not_read_as_the_working_directory(tmp_path, monkeypatch, source):
    """``Path("")`` is ``.``: an unset shell variable as the source predicted on every image of the working
    directory."""
    _image(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"an empty source \('\s*'\): name a file, folder, glob"):
        expand_source(source)


def test_yolo_label_with_bom(tmp_path):
    _image(tmp_path / "images")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes("\ufeff0 0.5 0.5 0.25 0.5\r\n".encode())
    (tmp_path / "list.txt").write_bytes("\ufeffimages/a.jpg\n".encode())
    (record,), report = load_records({"path": str(tmp_path), "train": "list.txt", "names": ["a"]}, "train")
    assert report.problems == []
    np.testing.assert_allclose(record.boxes, [[24, 12, 40, 36]])


def test_coco_categories_with_one_name_name_both_ids(tmp_path):
    data = _coco(tmp_path, lambda d: d["categories"].append({"id": 17, "name": "cat"}))
    with pytest.raises(
        DataError, match=r"train\.json: categories\[1\]: the name 'cat' is both category id 3 and id 17"
    ):
        load_records(data, "train", cache=False)


def test_coco_empty_annotations_warns(tmp_path):
    records, report = load_records(_coco(tmp_path, lambda d: d.update(annotations=[])), "train", cache=False)
    assert [len(r.boxes) for r in records] == [0]
    (problem,) = report.problems
    assert problem.severity == "warning" and "'annotations' is empty" in problem.message


def test_truncated_jpeg_same_answer_in_check_data_and_predict(tmp_path, caplog):
    """OpenCV decodes a JPEG cut short (the rest grey); check-data leaves it out, and predict refuses it
    with the same words: skipped with a warning in a folder, an error alone."""
    import logging

    import cv2

    from yolotr.data.images import iter_frames
    from yolotr.data.synthetic import generate_sample

    (tmp_path / "images").mkdir()
    good = tmp_path / "images" / "good.jpg"
    cv2.imwrite(str(good), generate_sample(0, 128, seed=1)[0][..., ::-1])
    data = good.read_bytes()
    cut = tmp_path / "images" / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None  # what OpenCV alone would have predicted on
    records, report = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert [Path(r.path).name for r in records] == ["good.jpg"]
    (problem,) = report.problems
    assert problem.file == str(cut) and problem.severity == "error" and "truncated JPEG" in problem.message
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        frames = list(iter_frames(tmp_path / "images", prefetch=0))
    assert [Path(f.path).name for f in frames] == ["good.jpg"]
    assert f"{cut}: truncated JPEG (no end marker); skipped" in caplog.text
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG \(no end marker\)"):
        list(iter_frames(cut))


def test_a_whole_jpeg_with_a_trailer_is_not_truncated(tmp_path):
    """Samsung phones append a 'SEFH...SEFT' trailer, Motion Photos a video, after the JPEG's end marker: the
    file decodes whole, but the marker was not in the last 64 bytes, and such photos were left out of training
    and refused by predict as 'truncated'."""
    import cv2

    from yolotr.data.images import iter_frames
    from yolotr.data.synthetic import generate_sample

    (tmp_path / "images").mkdir()
    phone = tmp_path / "images" / "phone.jpg"
    ok, encoded = cv2.imencode(".jpg", generate_sample(0, 128, seed=1)[0])
    phone.write_bytes(encoded.tobytes() + b"SEFH" + bytes(120) + b"Image_UTC_Data1700000000000" + bytes(16) + b"SEFT")
    records, report = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert [Path(r.path).name for r in records] == ["phone.jpg"] and not report.problems
    (frame,) = iter_frames(phone)
    assert frame.image.shape[:2] == (128, 128)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_cut_jpeg_is_found_whatever_pillows_truncated_setting(tmp_path, monkeypatch, progressive):
    """``ImageFile.LOAD_TRUNCATED_IMAGES = True`` (the usual answer to Pillow's "image file is truncated") made
    a decode succeed, and cut JPEGs passed as whole."""
    import io

    from PIL import ImageFile

    from yolotr.data.validation import truncated_jpeg

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=progressive)
    data = buffer.getvalue()
    for name, content, cut in (("whole", data, False), ("cut", data[: len(data) // 2], True),
                               ("trailer", data + b"SEFH" + bytes(200), False)):  # fmt: skip
        (tmp_path / f"{name}.jpg").write_bytes(content)
        assert truncated_jpeg(tmp_path / f"{name}.jpg") is cut, name


def test_training_and_prediction_read_the_same_image_files(tmp_path):
    """A folder's camera.MPO trained but was left out of predict with no word (predict's list lacked .mpo);
    a .pfm was listed for training and then refused by its check."""
    import cv2

    from yolotr.data.images import iter_frames
    from yolotr.data.sources import IMG_FORMATS
    from yolotr.data.synthetic import generate_sample

    (tmp_path / "images").mkdir()
    ok, encoded = cv2.imencode(".jpg", generate_sample(0, 64, seed=1)[0])
    for name in ("camera.MPO", "photo.jpg"):
        (tmp_path / "images" / name).write_bytes(encoded.tobytes())
    records, _ = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    frames = list(iter_frames(tmp_path / "images", prefetch=0))
    assert sorted(Path(r.path).name for r in records) == sorted(Path(f.path).name for f in frames)
    assert len(frames) == 2 and ".pfm" not in IMG_FORMATS


def test_32_bit_tiff_rejected_by_check_data_and_by_the_readers(tmp_path):
    """OpenCV (training's and prediction's reader) cannot read 32-bit samples; check-data says so
    instead of calling it a 16-bit image that trains."""
    from yolotr.data.dataset import read_image as loader_read
    from yolotr.data.images import read_image

    _image(tmp_path / "images", "good.jpg")
    tif = tmp_path / "images" / "deep.tif"
    Image.fromarray((np.arange(48 * 64, dtype=np.int32).reshape(48, 64) * 1000), mode="I").save(tif)
    records, report = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert [Path(r.path).name for r in records] == ["good.jpg"]
    (problem,) = report.problems
    assert problem.file == str(tif) and problem.severity == "error" and "32-bit TIFF" in problem.message
    assert loader_read(str(tif)) is None  # what the training loader would have got
    with pytest.raises(DataError, match=r"deep\.tif: 32-bit TIFF \(I\): OpenCV .* cannot read 32-bit samples"):
        read_image(tif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_with_any_exif_orientation_is_read_upright(tmp_path, orientation):
    """OpenCV 5.1's imread failed on TIFFs whose orientation swaps the sides (5-8), so check-data counted them
    (rotated) while the loader got None. Both readers now give the image as PIL's exif_transpose shows it."""
    from PIL import ImageOps

    from yolotr.data.dataset import read_image as loader_read
    from yolotr.data.images import read_image

    pixels = np.random.default_rng(orientation).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = orientation
    tif = tmp_path / "images" / "turned.tif"
    tif.parent.mkdir()
    stored.save(tif, exif=exif)
    with Image.open(tif) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(read_image(tif), upright)
    assert np.array_equal(loader_read(str(tif))[..., ::-1], upright)  # BGR
    records, report = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert len(records) == 1 and not [p for p in report.problems if p.severity == "error"]
    assert (records[0].height, records[0].width) == upright.shape[:2]  # the size the loader will read


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_orientation_opencv_does_not_apply_keeps_the_stored_size(tmp_path, suffix):
    """Pillow reads orientation 6 from XMP (JPEG) and from an ImageMagick text profile (PNG); OpenCV, which
    decodes every image in training, does not apply it. The record said turned (h=60, w=40), and the loader
    stretched the 60x40 image it decoded to a portrait, the labels in the wrong frame."""
    import binascii

    from PIL import PngImagePlugin

    from yolotr.data.dataset import read_image as loader_read

    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    path = tmp_path / "images" / f"xmp{suffix}"
    path.parent.mkdir()
    if suffix == ".jpg":
        xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        xmp += b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
        xmp += b"</rdf:RDF></x:xmpmeta>"
        stored.save(path, xmp=xmp)
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        raw = b"Exif\x00\x00" + exif.tobytes()
        info = PngImagePlugin.PngInfo()
        info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{binascii.hexlify(raw).decode()}\n", zip=True)
        stored.save(path, pnginfo=info)
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == 6  # what Pillow reports
    assert loader_read(str(path)).shape[:2] == (40, 60)  # what OpenCV decodes
    records, report = load_records({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert (records[0].height, records[0].width) == (40, 60)
    assert "which OpenCV does not apply" in report.problems[0].message


def test_a_folder_given_where_one_image_is_read_is_named_a_folder(tmp_path):
    """``yolotr explain --source photos/`` said "photos: no such image file" of a folder that exists."""
    from yolotr.data.images import read_image

    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"photos: a folder, not an image file"):
        read_image(tmp_path / "photos")
    with pytest.raises(DataError, match=r"gone\.jpg: no such image file"):
        read_image(tmp_path / "gone.jpg")
