"""Reading prediction frames ahead in a thread: same order, same errors, overlapped with the consumer."""

import threading
import time

import cv2
import numpy as np
import pytest

from yolotr.data.images import iter_frames, read_ahead
from yolotr.errors import DataError


def _slow(n, delay, fail_at=None):
    for i in range(n):
        time.sleep(delay)
        if i == fail_at:
            raise DataError(f"item {i}: broken")
        yield i


def test_order_and_overlap():
    t0 = time.perf_counter()
    seen = []
    for item in read_ahead(_slow(10, 0.05), depth=2):
        time.sleep(0.05)  # the consumer's work; the producer reads the next item meanwhile
        seen.append(item)
    elapsed = time.perf_counter() - t0
    assert seen == list(range(10))
    assert elapsed < 0.85  # one after the other: 1.0 s; overlapped: about 0.55 s


def test_an_error_arrives_after_the_items_before_it():
    seen = []
    with pytest.raises(DataError, match="item 3: broken"):
        for item in read_ahead(_slow(6, 0.0, fail_at=3), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_stopping_early_stops_the_thread():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    frames = read_ahead(endless(), depth=2)
    assert [next(frames) for _ in range(3)] == [0, 1, 2]
    frames.close()
    assert closed.wait(2.0)  # the producer noticed, stopped and closed its source


def _write(path, value):
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def test_iter_frames_reads_a_folder_ahead_and_a_single_image_in_place(tmp_path):
    for i in range(3):
        _write(tmp_path / f"{i}.png", 40 * i)
    (tmp_path / "3.png").write_text("not an image")
    before = threading.active_count()
    single = iter_frames(tmp_path / "1.png")
    assert [int(f.image[0, 0, 0]) for f in single] == [40]
    assert threading.active_count() == before  # one image: no thread
    frames = iter_frames(tmp_path, skip_unreadable=False)
    got = [int(next(frames).image[0, 0, 0]) for _ in range(3)]
    assert got == [0, 40, 80]
    with pytest.raises(DataError, match="3.png"):
        next(frames)
