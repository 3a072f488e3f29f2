"""Reading images and enumerating prediction sources (files, folders, globs, list files, videos)."""

from __future__ import annotations

import glob
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolotr.data.dataset import read_image as read_bgr
from yolotr.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpeg", ".mpg"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB ``(H, W, 3)`` uint8: EXIF-rotated, greyscale, alpha and 16-bit converted
    (OpenCV's ``imread``, as YOLOv5 reads images, through :func:`yolotr.data.dataset.read_image`).

    Raises:
        DataError: naming the file when it is missing, unreadable or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    image = read_bgr(str(path))
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Frame:
    """One image to predict on: RGB ``(H, W, 3)`` uint8, where it came from, frame index for videos."""

    image: np.ndarray
    path: str
    frame: int | None = None
    fps: float = 0.0


def expand_source(source: str | Path | list) -> list[Path]:
    """Files named by a source: a file, a folder (sorted images and videos), a glob, a ``.txt`` list."""
    if isinstance(source, list | tuple):
        return [p for s in source for p in expand_source(s)]
    text = str(source)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif path.suffix.lower() == ".txt" and path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        files = [(path.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{source}: no such file, folder or glob match")
    if not files:
        raise DataError(f"{source}: no images or videos found")
    return files


def iter_frames(source: str | Path | list, prefetch: int = 2) -> Iterator[Frame]:
    """Stream frames from a source; videos are read one frame at a time (memory stays flat).

    With ``prefetch > 0`` and more than one image or any video, a background thread reads up to
    ``prefetch`` frames ahead (OpenCV releases the GIL while it decodes), so that reading the next image
    overlaps the model's work on this one. Frames and errors arrive in the source's order either way.
    """
    files = expand_source(source)
    frames = _read_frames(files)
    if prefetch > 0 and (len(files) > 1 or files[0].suffix.lower() in VIDEO_SUFFIXES):
        frames = read_ahead(frames, prefetch)
    return frames


def _read_frames(files: list[Path]) -> Iterator[Frame]:
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise DataError(f"{path}: cannot open video")
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            index = 0
            try:
                while True:
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(path), index, fps)
                    index += 1
            finally:
                capture.release()
        else:
            yield Frame(read_image(path), str(path))


_END = object()


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """Yield what ``items`` yields, produced by a daemon thread up to ``depth`` items ahead.

    An exception raised by ``items`` is raised here, after the items before it. When the consumer stops
    early (``close()``, or the generator is dropped) the thread stops at its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a video's capture is released in the thread that used it

    def consume() -> Iterator:
        thread = threading.Thread(target=produce, name="yolotr-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                item, error = buffer.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                yield item
        finally:
            stop.set()

    return consume()
