"""check_data: the printable report of `yolotr check-data` and its exit code."""

from __future__ import annotations

from pathlib import Path

from yolotr.data.check import EXIT_ERRORS, EXIT_NO_USABLE_IMAGE, EXIT_OK, check_data


def _blocks(text: str) -> dict[str, list[str]]:
    """The lines of each split's block (its headline, then its indented problems)."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        split = line.split(":", 1)[0]
        if split in ("train", "val") and "images usable" in line:
            current = split
            blocks[current] = [line]
        elif current and line.startswith("  "):
            blocks[current].append(line)
        else:
            current = None
    return blocks


def test_check_data_lists_every_problem_once_per_split(broken_dataset, caplog):
    yaml_file, expected = broken_dataset
    check = check_data(yaml_file)
    text = str(check)
    assert text == check.text and check.exit_code == EXIT_ERRORS == 1
    blocks = _blocks(text)
    assert list(blocks) == ["train", "val"]  # train and val name the same folder
    problems = check.reports["train"].problems
    assert [str(p) for p in problems] == [str(p) for p in check.reports["val"].problems]
    for split, lines in blocks.items():
        assert lines[0].startswith(f"{split}: 8/19 images usable, 11 left out (2 NaN or inf, ")
        assert lines[1:] == [f"  {p}" for p in problems]
    for name, (line, severity) in expected.items():
        where = f"{name}:{line}: {severity}:" if line else f"{name}: {severity}:"
        assert sum(where in row for row in text.splitlines()) == 2, where  # once per split
    assert [r for r in caplog.records if r.name.startswith("yolotr")] == []  # printed once, nothing logged
    table = text.strip().splitlines()[-4:]
    assert table[0].split() == ["class", "train", "images", "train", "boxes", "val", "images", "val", "boxes"]
    assert table[1].split() == ["a", "7", "7", "7", "7"] and table[2].split() == ["b", "0", "0", "0", "0"]
    assert table[3].split() == ["all", "8", "7", "8", "7"]


def test_check_data_raccoon(raccoon_voc):
    check = check_data(raccoon_voc)
    assert "train: 160/160 images usable, 173 boxes" in check.text
    assert "val: 40/40 images usable, 44 boxes" in check.text
    assert check.text.strip().splitlines()[-2].split() == ["raccoon", "160", "173", "40", "44"]
    assert check.exit_code == EXIT_OK == 0


def test_check_data_reports_empty_split(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "x.png").write_bytes(b"nope")
    from yolotr.data.synthetic import make_shapes_dataset

    good = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=1, imgsz=64).parent
    data = {
        "path": str(tmp_path),
        "train": str(Path(good) / "images" / "train"),
        "val": "val",
        "names": ["a", "b", "c"],
    }
    check = check_data(data)
    assert "val: 0/1 images usable, 1 left out (1 unreadable image)" in check.text and "x.png" in check.text
    assert check.text.rstrip().splitlines()[-1].startswith("error: split 'val' has no usable image")
    assert list(check.unusable) == ["val"] and check.exit_code == EXIT_NO_USABLE_IMAGE == 3


def test_check_data_split_that_cannot_be_listed(tmp_path):
    from yolotr.data.synthetic import make_shapes_dataset

    good = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=1, imgsz=64).parent
    data = {"path": str(good), "train": "images/train", "val": "images/nothing", "names": ["a", "b", "c"]}
    check = check_data(data)
    assert "val: cannot be read: <dict>: split entry" in check.text
    assert "train: 2/2 images usable" in check.text and check.exit_code == EXIT_NO_USABLE_IMAGE
