"""Reading images and enumerating prediction sources (files, folders, globs, list files, videos)."""

from __future__ import annotations

import glob
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from yolotr.data.image_read import read_image as read_bgr
from yolotr.data.validation import (
    IMAGE_SUFFIXES,
    PIL_SAYS,
    TRUNCATED_JPEG,
    UNREADABLE_IMAGE,
    inspect_image,
    truncated_jpeg,
    unread_images_note,
)
from yolotr.errors import DataError
from yolotr.file_sniff import describe_unopened_video

LOGGER = logging.getLogger("yolotr")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpeg", ".mpg"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB ``(H, W, 3)`` uint8: EXIF-rotated, greyscale, alpha and 16-bit converted
    (OpenCV's ``imread``, as YOLOv5 reads images, through :func:`yolotr.data.image_read.read_image`).

    Raises:
        DataError: naming the file when it is missing, unreadable or not an image, a JPEG without its
            end marker (truncated: OpenCV would fill the rest with grey) or a 32-bit TIFF; the reason is
            ``check-data``'s, which leaves such files out of training.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not an image file (this reads one image; name a file in it)")
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    image = read_bgr(str(path))
    if image is None:  # check-data's reason where it has one: a 32-bit TIFF, a cut JPEG, a web page, a HEIC photo
        _, _, problem = inspect_image(str(path))
        known = problem is not None and problem.kind == UNREADABLE_IMAGE and not problem.message.startswith(PIL_SAYS)
        why = (
            problem.message.removesuffix(", skipped")
            if known
            else "not a readable image (corrupt or unsupported format)"
        )
        raise DataError(f"{path}: {why}")
    if truncated_jpeg(path):  # OpenCV decoded it, the missing part grey
        raise DataError(f"{path}: {TRUNCATED_JPEG}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Frame:
    """One image to predict on: RGB ``(H, W, 3)`` uint8, where it came from, frame index for videos."""

    image: np.ndarray
    path: str
    frame: int | None = None
    fps: float = 0.0


def expand_source(source: str | Path | list) -> list[Path]:
    """Files named by a source: a file, a folder (sorted images and videos), a glob, a ``.txt`` list.

    A ``.txt`` list names one file, folder or glob per line, as the package's lists do: a relative line is
    looked up beside the list, then from the working directory (the package's first place); blank lines and
    lines starting with ``#`` are skipped.

    Raises:
        DataError: the source does not exist or names no file; a URL, webcam index or screen (sources yolotr
            does not read); a list file cannot be read, or one of its lines names nothing that exists (the
            message gives the list and line).
    """
    if isinstance(source, list | tuple):
        return [p for s in source for p in expand_source(s)]
    if isinstance(source, bytes | bytearray | memoryview):
        raise DataError(
            f"a source of {len(source)} bytes: decode it first (cv2.imdecode(np.frombuffer(data, np.uint8), "
            "cv2.IMREAD_COLOR) gives a BGR array to predict on) or name the file"
        )
    text = str(source)
    if not text.strip():  # Path("") is the working directory: an unset variable would predict on it
        raise DataError(f"an empty source ({text!r}): name a file, folder, glob, list file or video")
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():  # an existing 'shot[1].jpg' is that file
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    elif path.is_dir():
        listed = sorted(path.iterdir())
        files = [p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        if note := unread_images_note(listed, str(path)):
            LOGGER.warning(note)
    elif path.suffix.lower() == ".txt" and path.is_file():
        files = _listed_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{source}: {_not_found(text)}")
    if not files:
        raise DataError(f"{source}: no images or videos found")
    return files


def _not_found(text: str) -> str:
    """Why a source that is not a file, folder or glob match is not read: a stream, or nothing there."""
    if "://" in text:
        return "a URL or stream: yolotr reads files, folders, globs, list files and videos on disk (download it first)"
    if text.strip().isdigit():
        return "no such file; webcam streams are not read (record a video file, or give frames as arrays)"
    if text.strip().lower() == "screen":
        return "no such file; screen capture is not read (give screenshots as files or arrays)"
    return "no such file, folder or glob match"


def _listed_files(listing: Path) -> list[Path]:
    """The files a ``.txt`` list names (see :func:`expand_source`)."""
    try:
        lines = listing.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: cannot read the list of files: {exc}") from None
    files = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        here = Path(line) if Path(line).is_absolute() else listing.parent / line
        wanted = next((c for c in (here, Path(line)) if c.exists() or _is_glob_match(c)), None)
        if wanted is None:
            where = " (looked for beside the list and from the working directory)" if "://" not in line else ""
            raise DataError(f"{listing}:{n}: {line}: {_not_found(line)}{where}")
        if wanted.suffix.lower() == ".txt" and wanted.is_file():
            raise DataError(f"{listing}:{n}: {line}: a list inside a list (name its files, folders or globs)")
        try:
            files.extend(expand_source(wanted) if wanted.is_dir() or not wanted.exists() else [wanted])
        except DataError as exc:
            raise DataError(f"{listing}:{n}: {exc}") from None
    return files


def _is_glob_match(path: Path) -> bool:
    text = str(path)
    return any(ch in text for ch in "*?[") and bool(glob.glob(text, recursive=True))


def is_array_image(source) -> bool:
    """Whether ``source`` is an in-memory image: a NumPy array, a PIL image or a torch tensor."""
    return isinstance(source, np.ndarray | torch.Tensor) or (
        type(source).__module__.startswith("PIL.") and hasattr(source, "convert")
    )


def tensor_images(images: torch.Tensor) -> list[np.ndarray]:
    """A ``(B, 3, H, W)`` or ``(3, H, W)`` float tensor of RGB values in ``[0, 1]`` (what Ultralytics takes, and
    what a torchvision transform gives) as ``(H, W, 3)`` uint8 BGR arrays, one per image.

    Raises:
        DataError: another shape, a non-float dtype, or values outside ``[0, 1]``.
    """
    batch = images.unsqueeze(0) if images.ndim == 3 else images
    if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point() or 0 in batch.shape:
        raise DataError(
            f"a tensor image must be float (B, 3, H, W) or (3, H, W) RGB in [0, 1], got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    batch = batch.detach().float().cpu()
    low, high = float(batch.min()), float(batch.max())
    if low < 0 or high > 1:
        raise DataError(f"a tensor image must hold values in [0, 1] (not 0-255), got {low:g} to {high:g}")
    rgb = (batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(image[..., ::-1]) for image in rgb]


def array_frame(image, index: int = 0) -> Frame:
    """An in-memory image as a :class:`Frame` named ``image<index>.jpg`` (as Ultralytics names them; a PIL image
    opened from a file keeps its file name, ``Image.filename``, as there).

    A NumPy array is OpenCV's layout, as ``cv2.imread`` gives it: ``(H, W, 3)`` BGR, ``(H, W, 4)`` BGRA
    or ``(H, W)`` grey, uint8. A PIL image is turned upright by its EXIF orientation (as a file is read) and
    converted to RGB, 16- and 32-bit grey scaled down to 8 bits.

    Raises:
        DataError: an array of another shape or dtype.
    """
    name = f"image{index}.jpg"
    if not isinstance(image, np.ndarray):  # an opened file keeps its name, as the package's path of a PIL image
        return Frame(np.ascontiguousarray(np.asarray(_pil_rgb(image))), getattr(image, "filename", "") or name)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise DataError(
            f"{name}: an array image must be uint8 (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) grey, "
            f"got {image.dtype} {tuple(image.shape)}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{name}: an empty image {tuple(image.shape)}")
    if image.ndim == 2 or image.shape[2] == 1:
        return Frame(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB), name)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return Frame(cv2.cvtColor(np.ascontiguousarray(image), code), name)


def _pil_rgb(image):
    """A PIL image upright (EXIF orientation) in RGB; 16-bit grey (``I;16``) keeps its top 8 bits, as OpenCV reads
    a 16-bit file (``convert("RGB")`` clips at 255: a white image). 32-bit grey (``I``) is scaled by the range its
    values use: kept when they fit 8 bits (``Image.fromarray`` of an int array of 0..255, ``convert("I")`` of
    an 8-bit image), the top 8 of 16 bits when they fit 16, the top 8 bits of the largest value beyond."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        deep = np.asarray(image).clip(0).astype(np.uint32)
        top = int(deep.max(initial=0))
        shift = 8 if image.mode.startswith("I;16") or 0xFF < top <= 0xFFFF else max(top.bit_length() - 8, 0)
        return Image.fromarray((deep >> shift).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def iter_frames(source, prefetch: int = 2, skip_unreadable: bool | None = None) -> Iterator[Frame]:
    """Stream frames from a source; videos are read one frame at a time (memory stays flat).

    ``source``: a file, folder, glob, ``.txt`` list or video (see :func:`expand_source`), an in-memory
    image (:func:`array_frame`), or a list of any of these.

    With ``prefetch > 0`` and more than one image or any video, a background thread reads up to
    ``prefetch`` frames ahead (OpenCV releases the GIL while it decodes), so that reading the next image
    overlaps the model's work on this one. Frames and errors arrive in the source's order either way.

    ``skip_unreadable`` (default: when the source names more than one file): a file that is not a
    readable image or video is skipped with a warning naming it, instead of ending the stream; when no
    file could be read at all, :class:`~yolotr.errors.DataError` says so. A single file that cannot be
    read is always an error.
    """
    items = list(source) if isinstance(source, list | tuple) else [source]
    if not items:
        raise DataError("an empty list of sources: nothing to predict on")
    if any(is_array_image(item) for item in items):
        return _mixed_frames(items, prefetch)
    files = expand_source(source)
    frames = _read_frames(files, len(files) > 1 if skip_unreadable is None else skip_unreadable, source)
    if prefetch > 0 and (len(files) > 1 or files[0].suffix.lower() in VIDEO_SUFFIXES):
        frames = read_ahead(frames, prefetch)
    return frames


def _mixed_frames(items: list, prefetch: int) -> Iterator[Frame]:
    """Frames of a list mixing in-memory images (a tensor: one per image of its batch) and file sources, in
    order; a file source that cannot be read is skipped with a warning, as in a list of files."""
    index = 0
    for item in items:
        for image in tensor_images(item) if isinstance(item, torch.Tensor) else [item]:
            if is_array_image(image):
                yield array_frame(image, index)
            else:
                files = expand_source(image)  # a missing path is an error, as in a list of files
                try:
                    yield from iter_frames(files, prefetch)  # expanded once: the paths themselves from here
                except DataError as e:
                    LOGGER.warning("%s; skipped", e)
            index += 1


def _read_frames(files: list[Path], skip_unreadable: bool, source) -> Iterator[Frame]:
    read = 0
    for path in files:
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                for frame in _video_frames(path):
                    read += 1
                    yield frame
                continue
            image = read_image(path)
        except DataError as e:
            if not skip_unreadable:
                raise
            LOGGER.warning("%s; skipped", e)
            continue
        read += 1
        yield Frame(image, str(path))
    if not read and skip_unreadable:
        raise DataError(f"{source}: none of its {len(files)} files is a readable image or video")


def _video_frames(path: Path) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        looks = describe_unopened_video(path)  # an HTML page saved as .mp4, an empty file, an MP4 cut short, ...
        raise DataError(f"{path}: cannot open video" + (f": it looks like {looks}" if looks else ""))
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
    if not index:
        raise DataError(f"{path}: the video opens but no frame can be read from it (empty or damaged)")


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
