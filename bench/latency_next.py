"""``bench/latency.py --e2e`` for the NMS-free heads (YOLO26, YOLOv10) against the ``ultralytics`` package.

Milliseconds per image from the JPEG on disk to boxes on the original image, fp32, batch 1, conf 0.25,
max_det 300, the one-to-one branch on every side (no NMS anywhere):

- yolotr: ``YOLO.predict(path)`` in a loop (backend ``--backend``; the head's own end-to-end output is the
  default), and the CLI's path, ``run_prediction`` over the images with the predictor ``yolotr predict``
  builds (model loading excluded);
- package steps: the ``ultralytics`` predictor's own steps with nothing around them: ``cv2.imread``, its
  ``LetterBox`` (stride 32, ``auto``: the minimal rectangle, as ``YOLO.predict`` sets ``rect``), BGR->RGB,
  HWC->CHW, ``/ 255``, the package's fused ``DetectionModel`` with ``end2end = True`` (its top-k over the
  one-to-one branch: what ``nms=False`` selects; 8.4.190 reads the one-to-many branch with NMS unless told),
  its ``non_max_suppression(..., end2end=True)`` (the confidence filter only) and ``scale_boxes``, under
  ``torch.inference_mode``: the reference the bar is taken against;
- package predict: the package's ``YOLO.predict(path, nms=False)`` as a user calls it (its predictor,
  ``AutoBackend`` fusing the model, ``Results``): shown, not the bar.

The package's model is built from the package's own YAML of that name and holds yolotr's weights (loaded by
name: the keys are the package's): ``../shared/reference/ultralytics-next/<name>_rule.pt`` where the shared
folder has it (yolo26n, yolov10n), else yolotr's initial weights of the YAML. A run predicts every image once
on each side, the sides taking turns (order alternating); the table gives the median over runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import time

import torch
from latency import alternating_ms
from machine import machine_line

END2END_PREFIXES = ("yolo26", "yolov10", "rtdetr")
E2E_IMAGES = ("bus.jpg", "zidane.jpg")


def package_model(name: str, yolo):
    """The package's fused ``DetectionModel`` of ``name`` with ``yolo``'s weights, reading its one-to-one branch."""
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    with contextlib.redirect_stdout(io.StringIO()):
        package_class = RTDETRDetectionModel if name.startswith("rtdetr") else DetectionModel
        ref = package_class(f"{name}.yaml", nc=yolo.model.nc, verbose=False)
    ref.load_state_dict({k: v.float() for k, v in yolo.model.state_dict().items()}, strict=True)
    ref.names = dict(enumerate(yolo.names))
    # before fuse, which keeps the branch end2end selects: as the package's nms=False sets it (as built, its
    # YOLO26 head reads False and fuse would drop the one-to-one branch)
    if not name.startswith("rtdetr"):  # RT-DETR's decoder has one output: nothing to select
        ref.end2end = True
    return ref.fuse(verbose=False).eval()


def same_boxes(a: torch.Tensor, b: torch.Tensor, tol: float = 1.0) -> bool:
    """Whether two ``(n, 6)`` detection sets hold the same boxes within ``tol`` pixels, in any order (near-tied
    scores may order rows differently)."""
    if a.shape != b.shape:
        return False
    if not len(a):
        return True
    gap = (a[:, None, :4] - b[None, :, :4]).abs().amax(-1)  # (n, n) largest corner difference
    return bool(gap.amin(1).max() <= tol and gap.amin(0).max() <= tol)


def end_to_end_next(args) -> None:
    """The table of :mod:`latency_next` (see the module)."""
    import cv2
    import numpy as np
    from shared_data import shared_root

    from yolotr import YOLO
    from yolotr.engine.fast_backend import AutoCpuBackend
    from yolotr.engine.predictor import Predictor, run_prediction

    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from ultralytics import RTDETR
            from ultralytics import YOLO as PackageYOLO
            from ultralytics.data.augment import LetterBox
            from ultralytics.nn.tasks import RTDETRDetectionModel
            from ultralytics.utils import SETTINGS
            from ultralytics.utils import nms as u_nms
            from ultralytics.utils import ops as u_ops
    except ImportError as e:
        raise SystemExit("--e2e with yolo26/yolov10 needs pip install --no-deps ultralytics==8.4.190") from e
    finally:
        logging.disable(logging.NOTSET)
    SETTINGS.update(sync=False)
    torch.set_num_threads(args.threads)  # importing the package sets its own

    images = [str(shared_root() / "images" / name) for name in E2E_IMAGES]
    if args.cpu_time and args.threads != 1:
        raise SystemExit("--cpu-time needs --threads 1 (with more threads the CPU clock adds the threads' time up)")
    clock = time.process_time if args.cpu_time else time.perf_counter
    conf, max_det = 0.25, 300

    def package_rtdetr_steps(model, path: str, size: int) -> torch.Tensor:
        """The package's RTDETRPredictor steps: the image stretched to a ``size`` square (its ``LetterBox`` with
        ``scale_fill``), the decoder's normalized ``cx, cy, w, h`` rows to corners times the image's sides."""
        im0 = cv2.imread(path)
        im = LetterBox((size, size), auto=False, scale_fill=True)(image=im0)
        im = im[..., ::-1].transpose((2, 0, 1))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(im)).float()[None] / 255
            preds = model(x)
            preds = (preds[0] if isinstance(preds, list | tuple) else preds)[0]
            det = torch.cat((u_ops.xywh2xyxy(preds[:, :4]), preds[:, 4:]), -1)
            det = det[det[:, 4] > conf][:max_det]
            det[:, [0, 2]] *= im0.shape[1]
            det[:, [1, 3]] *= im0.shape[0]
        return det

    def package_steps(model, path: str, size: int) -> torch.Tensor:
        if isinstance(model, RTDETRDetectionModel):
            return package_rtdetr_steps(model, path, size)
        im0 = cv2.imread(path)
        im = LetterBox((size, size), auto=True, stride=32)(image=im0)
        im = im[..., ::-1].transpose((2, 0, 1))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(im)).float()[None] / 255
            det = u_nms.non_max_suppression(model(x), conf, 0.7, max_det=max_det, end2end=True)[0]
            det[:, :4] = u_ops.scale_boxes(x.shape[2:], det[:, :4], im0.shape)
        return det

    def timed_row(yolo, ref, wrapper, size: int) -> dict[str, list[float]]:
        settings = dict(imgsz=size, conf=conf, max_det=max_det)
        cli = Predictor(yolo.model, yolo.names, **settings, backend=yolo.prepared_backend(args.backend))

        def ours(path):
            return yolo.predict(path, **settings, backend=args.backend, verbose=False)[0].boxes.data

        def package_predict(path):
            return wrapper.predict(path, **settings, nms=False, device="cpu", verbose=False)[0].boxes.data

        for path in images * AutoCpuBackend.TORCH_BATCHES:  # auto's PyTorch batches of each size
            ours(path)
        for path in images:  # warm-up and the same boxes on every side
            a, b, c = ours(path), package_steps(ref, path, size), package_predict(path)
            for other, label in ((b, "package steps"), (c, "package predict")):
                if not same_boxes(a, other):
                    print(
                        f"  note: {size} {os.path.basename(path)}: boxes differ from {label} ({len(a)} vs {len(other)})"
                    )
        steps = {
            "ours": lambda: [ours(p) for p in images],
            "cli": lambda: run_prediction(cli, images, None),
            "ref": lambda: [package_steps(ref, p, size) for p in images],
            "pkg": lambda: [package_predict(p) for p in images],
        }
        return alternating_ms(steps, args.runs, clock, len(images))

    load = os.getloadavg()
    print(
        f"end to end (NMS-free heads, one-to-one branch), fp32, batch 1, {args.threads} threads, median of {args.runs} "
        f"runs over {len(images)} images ({', '.join(E2E_IMAGES)}), conf {conf}, max_det {max_det}, backend "
        f"{args.backend}, {'CPU' if args.cpu_time else 'wall'} clock; torch {torch.__version__}; {machine_line()}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"{'model':<10}{'size':>6}{'yolotr ms':>11}{'CLI ms':>9}{'pkg steps':>11}{'pkg predict':>13}{'ratio':>8}"
        f"{'CLI ratio':>11}{'min ratio':>11}{'vs predict':>12}"
    )
    rule = shared_root() / "reference" / "ultralytics-next"
    for name in args.models:
        weights = rule / f"{name}_rule.pt"
        yolo = YOLO(weights if weights.is_file() else f"{name}.yaml", verbose=False)
        logging.disable(logging.INFO)
        with contextlib.redirect_stdout(io.StringIO()):
            ref = package_model(name, yolo)
            wrapper = (RTDETR if name.startswith("rtdetr") else PackageYOLO)(f"{name}.yaml")
            wrapper.model = package_model(name, yolo)
        logging.disable(logging.NOTSET)
        torch.set_num_threads(args.threads)
        for size in args.sizes:
            times = timed_row(yolo, ref, wrapper, size)
            t_ours, t_cli, t_ref, t_pkg = (statistics.median(times[k]) for k in ("ours", "cli", "ref", "pkg"))
            min_ratio = min(times["ours"]) / min(times["ref"])
            print(
                f"{name:<10}{size:>6}{t_ours:11.1f}{t_cli:9.1f}{t_ref:11.1f}{t_pkg:13.1f}{t_ours / t_ref:8.2f}"
                f"{t_cli / t_ref:11.2f}{min_ratio:11.2f}{t_ours / t_pkg:12.2f}"
            )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("ratio = yolotr / package steps of the medians (min ratio: of the fastest runs), vs predict = yolotr /")
    print("the package's YOLO.predict(nms=False); end to end per image, lower is faster; target <= 0.80")
