"""Prediction results: boxes of one image, drawing and JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from yolotr.engine.config import check_count
from yolotr.errors import ConfigError
from yolotr.ops.boxes import clip_boxes, xyxy2xywh
from yolotr.plotting import draw_boxes


@dataclass
class Boxes:
    """Detections of one image: ``data`` is ``(N, 6)`` float32 x1, y1, x2, y2, score, class (pixels), a tensor or
    (after :meth:`numpy`) a NumPy array; every view below is of the same kind as ``data``.

    ``orig_shape`` is the image's ``(h, w)``, which the normalized views (``xyxyn``, ``xywhn``) divide by.
    Indexing (``boxes[0]``, ``boxes[boxes.conf > 0.5]``) gives the selected rows as ``Boxes``; ``cpu()``,
    ``numpy()``, ``cuda()`` and ``to()`` give ``Boxes`` too, as the ``ultralytics`` package's do
    (``r.boxes.cpu().numpy().xyxy``).
    """

    data: torch.Tensor | np.ndarray
    orig_shape: tuple[int, int] = (0, 0)

    @property
    def xyxy(self) -> torch.Tensor | np.ndarray:
        """``(N, 4)`` corners x1, y1, x2, y2 in pixels."""
        return self.data[:, :4]

    @property
    def xywh(self) -> torch.Tensor | np.ndarray:
        """``(N, 4)`` centre x, centre y, width, height in pixels."""
        corners = torch.as_tensor(self.data[:, :4])  # a NumPy array's memory, not a copy
        out = xyxy2xywh(corners.to(torch.promote_types(corners.dtype, torch.float32)))  # never whole numbers
        return out.numpy() if isinstance(self.data, np.ndarray) else out

    @property
    def xyxyn(self) -> torch.Tensor | np.ndarray:
        """``(N, 4)`` corners divided by the image's width and height."""
        return self.xyxy / self._whwh()

    @property
    def xywhn(self) -> torch.Tensor | np.ndarray:
        """``(N, 4)`` centre and size divided by the image's width and height."""
        return self.xywh / self._whwh()

    @property
    def conf(self) -> torch.Tensor | np.ndarray:
        return self.data[:, 4]

    @property
    def cls(self) -> torch.Tensor | np.ndarray:
        return self.data[:, 5]

    @property
    def id(self) -> None:
        """Track ids: always ``None`` (yolotr does not track), as the package's ``boxes.id`` outside tracking, so
        ``if r.boxes.id is not None:`` reads as it does there."""
        return None

    @property
    def is_track(self) -> bool:
        """Whether the boxes carry track ids: never here (see :attr:`id`)."""
        return False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def _whwh(self) -> torch.Tensor | np.ndarray:
        h, w = self.orig_shape
        if not (h and w):
            raise ValueError("normalized boxes need the image size (Boxes.orig_shape)")
        if isinstance(self.data, np.ndarray):
            return np.array([w, h, w, h], self.data.dtype)
        return self.data.new_tensor([w, h, w, h])

    def cpu(self) -> Boxes:
        """These boxes with ``data`` on the CPU (a NumPy ``data`` stays as it is)."""
        return self if isinstance(self.data, np.ndarray) else Boxes(self.data.cpu(), self.orig_shape)

    def numpy(self) -> Boxes:
        """These boxes with ``data`` as a NumPy ``(N, 6)`` float32 array (``boxes.numpy().xyxy`` is an array)."""
        data = self.data if isinstance(self.data, np.ndarray) else self.data.detach().cpu().numpy()
        return Boxes(data, self.orig_shape)

    def cuda(self) -> Boxes:
        """These boxes with ``data`` on the current CUDA device."""
        return self.to("cuda")

    def to(self, *args, **kwargs) -> Boxes:
        """These boxes with ``data`` moved or cast as ``torch.Tensor.to`` does (a NumPy ``data`` becomes a tensor)."""
        return Boxes(torch.as_tensor(self.data).to(*args, **kwargs), self.orig_shape)

    def __getitem__(self, index) -> Boxes:
        data = self.data[index]
        return Boxes(data[None] if data.ndim == 1 else data, self.orig_shape)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        return f"Boxes(n={len(self)}, orig_shape={self.orig_shape}, data={self.data!r})"


@dataclass(repr=False)
class Results:
    """One predicted image or video frame.

    Attributes:
        orig_img: the original RGB ``(H, W, 3)`` uint8 image.
        path: the file it came from (``image<i>.jpg`` for an in-memory image).
        boxes: its detections.
        names: class names.
        input_shape: ``(h, w)`` of the letterboxed image the model saw.
        frame: the frame index in a video (from 0), ``None`` for an image.
        speed: milliseconds per image of ``preprocess`` (letterbox and conversion), ``inference`` (the
            model) and ``postprocess`` (NMS and scaling back), as in the ``ultralytics`` package; a
            batch's times are divided among its images.
    """

    orig_img: np.ndarray
    path: str
    boxes: Boxes
    names: list[str]
    input_shape: tuple[int, int] = (0, 0)
    frame: int | None = field(default=None)
    speed: dict[str, float] = field(default_factory=dict)

    @property
    def orig_shape(self) -> tuple[int, int]:
        return tuple(self.orig_img.shape[:2])

    # the ultralytics package's fields of its other tasks (segment, pose, classify, obb): a detector's are None,
    # so code written for the package (``if r.masks is not None``) runs on these results unchanged
    masks = keypoints = probs = obb = property(lambda self: None)

    def update(self, boxes: torch.Tensor | np.ndarray | None = None, **others) -> None:
        """Replace the detections with ``boxes`` ``(N, 6)`` (x1, y1, x2, y2, score, class in pixels), clipped to the
        image, as the package's ``Results.update(boxes=...)``.

        Raises:
            ConfigError: a field of another task (``masks=``, ``keypoints=``, ``probs=``, ``obb=``) given.
        """
        given = sorted(k for k, v in others.items() if v is not None)
        if given:
            raise ConfigError(
                f"Results.update: {given[0]}= is a field of another task; a detector's results hold boxes"
            )
        if boxes is not None:
            data = clip_boxes(torch.as_tensor(boxes, dtype=torch.float32).clone(), self.orig_shape)
            self.boxes = Boxes(data.numpy() if isinstance(self.boxes.data, np.ndarray) else data, self.orig_shape)

    def plot(self, conf: bool = True, labels: bool = True, line_width: int | None = None) -> np.ndarray:
        """The image with labelled boxes, RGB ``(H, W, 3)`` uint8 (the ``ultralytics`` package's is BGR).

        ``conf``: scores in the labels; ``labels``: class names (and scores) at all; ``line_width``: in pixels
        (None: 0.3 % of the image's mean side), the package's arguments of the same names.
        """
        if line_width is not None:
            check_count("line_width", line_width)
        data = self.boxes.numpy().data
        scores = data[:, 4] if conf else None
        return draw_boxes(self.orig_img, data[:, :4], scores, data[:, 5].astype(int), self.names, line_width, labels)

    def show(self, conf: bool = True, labels: bool = True, line_width: int | None = None) -> None:
        """Open the drawn image (:meth:`plot`'s arguments) in the system's image viewer through Pillow, as the
        ``ultralytics`` package's ``Results.show()`` does; the window's title is the image's file name."""
        Image.fromarray(self.plot(conf, labels, line_width)).show(title=Path(self.path).name)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the drawn image (format from the suffix; default ``results_<image name>`` here, and for a video
        frame ``results_<video stem>_<frame from 1>.jpg``).

        Raises:
            OSError: the suffix is not an image format OpenCV writes, or the file cannot be written.
        """
        if path is None:
            name = Path(self.path).name if self.frame is None else f"{Path(self.path).stem}_{self.frame + 1}.jpg"
            path = f"results_{name}"
        path = Path(path)
        if not cv2.haveImageWriter(str(path)):
            raise OSError(f"{path}: {path.suffix or 'no suffix'} is not an image format (.jpg, .png, ...)")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), cv2.cvtColor(self.plot(), cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the image")
        return path

    def summary(self) -> list[dict]:
        """One dict per detection: class id and name, score, box ``[x1, y1, x2, y2]`` in pixels."""
        return [
            {
                "class": int(c),
                "name": self.names[int(c)] if int(c) < len(self.names) else str(int(c)),
                "confidence": round(float(s), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for *box, s, c in self.boxes.data.tolist()
        ]

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`summary` as a JSON string."""
        return json.dumps(self.summary(), indent=indent)

    def to_csv(self) -> str:
        """:meth:`summary` as CSV text: a header ``name,class,confidence,x1,y1,x2,y2`` (pixels) and one row per
        detection (the columns of :meth:`to_df`, without pandas)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "class", "confidence", "x1", "y1", "x2", "y2"])
        writer.writerows([d["name"], d["class"], d["confidence"], *d["box"]] for d in self.summary())
        return out.getvalue()

    def to_df(self):
        """:meth:`summary` as a ``pandas.DataFrame``: columns ``name``, ``class``, ``confidence``, ``x1``,
        ``y1``, ``x2``, ``y2`` (pixels), one row per detection.

        Raises:
            ImportError: pandas is not installed (yolotr does not depend on it).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Results.to_df() needs pandas, which yolotr does not install: pip install pandas"
            ) from None
        rows = [
            {
                "name": d["name"],
                "class": d["class"],
                "confidence": d["confidence"],
                **dict(zip(("x1", "y1", "x2", "y2"), d["box"])),
            }
            for d in self.summary()
        ]
        return pd.DataFrame(rows, columns=["name", "class", "confidence", "x1", "y1", "x2", "y2"])

    def verbose(self) -> str:
        """Detections counted per class, ``"2 persons, 1 bus"`` style as the ``ultralytics`` log line
        (``"(no detections)"`` for none); classes in id order."""
        if not len(self):
            return "(no detections)"
        ids, counts = np.unique(self.boxes.numpy().cls.astype(np.int64), return_counts=True)
        parts = []
        for c, n in zip(ids.tolist(), counts.tolist()):
            name = self.names[c] if c < len(self.names) else str(c)
            parts.append(f"{n} {name}{'s' if n > 1 else ''}")
        return ", ".join(parts)

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write the detections as a YOLO label file: one ``class cx cy w h`` line per box, normalized to
        the image (``save_conf`` appends the score as a sixth column); an empty file for no detections."""
        h, w = self.orig_shape
        lines = []
        for x1, y1, x2, y2, s, c in self.boxes.data.tolist():
            line = f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            lines.append(f"{line} {s:.5f}" if save_conf else line)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + ("\n" if lines else ""))
        return path

    def crops(self) -> list[tuple[str, np.ndarray]]:
        """Each detection's region of the original image, ``(class name, RGB (h, w, 3) uint8)``, as the
        ``ultralytics`` package cuts it (``save_one_box``): the box grown by 2 % and 10 pixels a side length,
        its corners truncated to whole pixels and clipped to the image; an empty region is left out."""
        h, w = self.orig_shape
        regions = []
        for x1, y1, x2, y2, _, c in self.boxes.data.tolist():
            cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.02 + 10, (y2 - y1) * 1.02 + 10
            left, right = (min(max(int(v), 0), w) for v in (cx - bw / 2, cx + bw / 2))
            top, bottom = (min(max(int(v), 0), h) for v in (cy - bh / 2, cy + bh / 2))
            if right > left and bottom > top:
                name = self.names[int(c)] if int(c) < len(self.names) else str(int(c))
                regions.append((name, self.orig_img[top:bottom, left:right]))
        return regions

    def save_crop(self, save_dir: str | Path, file_name: str) -> list[Path]:
        """Write :meth:`crops` as ``save_dir/<class name>/<file_name>.jpg`` (``<file_name>-2.jpg``, ``-3``, ...
        for more of one class; JPEG quality 95 without chroma subsampling), as the ``ultralytics`` package
        does. Returns the paths written."""
        written = []
        for name, crop in self.crops():
            folder = Path(save_dir) / name
            folder.mkdir(parents=True, exist_ok=True)
            path, n = folder / f"{file_name}.jpg", 2
            while path.exists():
                path, n = folder / f"{file_name}-{n}.jpg", n + 1
            Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=95, subsampling=0)
            written.append(path)
        return written

    def __len__(self) -> int:
        return len(self.boxes)

    def new(self) -> Results:
        """These results without detections (same image, path, names and speed; ``boxes.data`` a ``(0, 6)`` float32
        tensor on the boxes' device, or a NumPy array after :meth:`numpy`), as the package's ``Results.new()``, whose
        boxes are ``None``."""
        return dataclasses.replace(self, boxes=self.boxes[:0], speed=dict(self.speed))  # no rows, same kind

    def __getitem__(self, index) -> Results:
        """These results with only the selected detections (``r[0]``, ``r[r.boxes.conf > 0.5]``), as the package."""
        return dataclasses.replace(self, boxes=self.boxes[index])

    def __iter__(self) -> Iterator[Results]:
        """One :class:`Results` per detection."""
        return (self[i] for i in range(len(self)))

    def cpu(self) -> Results:
        """These results with their boxes on the CPU (:meth:`Boxes.cpu`)."""
        return dataclasses.replace(self, boxes=self.boxes.cpu())

    def numpy(self) -> Results:
        """These results with NumPy boxes (:meth:`Boxes.numpy`)."""
        return dataclasses.replace(self, boxes=self.boxes.numpy())

    def cuda(self) -> Results:
        """These results with their boxes on the current CUDA device."""
        return dataclasses.replace(self, boxes=self.boxes.cuda())

    def to(self, *args, **kwargs) -> Results:
        """These results with their boxes moved or cast as :meth:`Boxes.to`."""
        return dataclasses.replace(self, boxes=self.boxes.to(*args, **kwargs))

    def __repr__(self) -> str:
        h, w = self.orig_shape
        where = self.path if self.frame is None else f"{self.path} frame {self.frame}"
        return f"Results({where!r}, {w}x{h}, {len(self)} detections)"
