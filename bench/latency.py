"""Forward latency of yolotr models against the reference model built from the same YAML.

fp32, batch 1, ``torch.set_num_threads(2)``, median of N runs after warm-up; both models fused
(conv+BN folded) and in eval mode, in the same process, taking turns; yolotr runs in ``channels_last``
as its predictor does (the references' predictors do not), ``--contiguous`` compares the same layout.

The reference of a YOLOv5 YAML is the official YOLOv5 ``Model`` (``pip install --no-deps yolov5 && pip
install pandas requests psutil seaborn ultralytics``); of a YOLOv8 / YOLO11 / YOLO12 YAML, the
``ultralytics`` package's own ``DetectionModel(...).fuse().eval()`` (``pip install --no-deps
ultralytics==8.4.190``), built from its own YAML by the same name. Without the package the column reads ``-``.

    python bench/latency.py                       # yolov5n, yolov5s at 320 and 640
    python bench/latency.py --models yolov8n yolov8s yolo11n yolo11s   # the anchor-free line
    python bench/latency.py --models yolov5n --sizes 320 --runs 10
    python bench/latency.py --models yolov5s yolov4 --runs 15 --onnx   # YOLOv4 (no reference column) and ORT
    python bench/latency.py --e2e --runs 20      # end to end per image: YOLO.predict and the CLI vs detect.py
    python bench/latency.py --e2e --threads 1 --cpu-time   # the same, one thread, CPU clock (a busy machine)
    python bench/latency.py --e2e --models yolo26n yolo26s yolov10n yolov10s   # NMS-free heads vs the package

YOLO26 / YOLOv10 (``--models yolo26* yolov10*``): the reference is the ``ultralytics`` package's model reading
its one-to-one branch (``end2end = True``, top-k, no NMS), as yolotr's head does by default; with ``--e2e``
those models take ``bench/latency_next.py`` (the package's predictor steps, no NMS anywhere).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time

import torch
from machine import machine_line

from yolotr.models.detection import DetectionModel, find_model_yaml

ANCHOR_FREE_PREFIXES = ("yolov8", "yolo11", "yolo12")
END2END_PREFIXES = ("yolo26", "yolov10")  # the NMS-free heads: the package's model too, reading its one-to-one branch


def official_model(name: str):
    """The reference model of a YAML, fused and in eval mode, or None when its code is not installed.

    YOLOv5 YAMLs: the official YOLOv5 ``Model``. YOLOv8 / YOLO11 / YOLO12: the ``ultralytics`` package's
    ``DetectionModel`` from the package's own YAML of that name (``yolov8n.yaml`` is its unified
    ``yolov8.yaml`` at scale ``n``), so the reference does not depend on yolotr's copy of the YAML.
    """
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if name.startswith(ANCHOR_FREE_PREFIXES + END2END_PREFIXES):
                from ultralytics.nn.tasks import DetectionModel as UltralyticsModel

                model = UltralyticsModel(f"{name}.yaml", verbose=False)
                if name.startswith(END2END_PREFIXES):  # before fuse, which keeps the branch end2end selects
                    model.end2end = True  # top-k over the one-to-one branch, as yolotr's head by default
                return model.fuse(verbose=False).eval()
            from yolov5.models.yolo import Model

            return Model(str(find_model_yaml(name))).fuse().eval()
    except ImportError:  # the reference code is not installed
        return None
    except (NameError, FileNotFoundError):  # a yolotr module or YAML the reference does not have: no column
        return None
    finally:
        logging.disable(logging.NOTSET)


def reference_label(name: str) -> str:
    return "ultralytics" if name.startswith(ANCHOR_FREE_PREFIXES + END2END_PREFIXES) else "YOLOv5"


def turn_times(models: list, inputs: list[torch.Tensor], runs: int) -> list[list[float]]:
    """Milliseconds of each run per model; the models take turns (the order alternating from run to
    run) so background load hits them alike."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model, x in zip(models, inputs):
            for _ in range(3):
                model(x)
        for run in range(runs):
            order = range(len(models)) if run % 2 == 0 else reversed(range(len(models)))
            for i in order:
                t = time.perf_counter()
                models[i](inputs[i])
                times[i].append((time.perf_counter() - t) * 1000)
    return times


def alternating_ms(steps: dict, runs: int, clock, per: int) -> dict[str, list[float]]:
    """Milliseconds per item (``per`` items a call) of each of ``runs`` calls of every step in ``steps``;
    the steps take turns, the order reversing every run, so background load hits them alike."""
    times: dict[str, list[float]] = {key: [] for key in steps}
    for run in range(runs):
        for key in list(steps)[:: 1 if run % 2 == 0 else -1]:
            t = clock()
            steps[key]()
            times[key].append((clock() - t) * 1000 / per)
    return times


def median_ms(models: list, inputs: list[torch.Tensor], runs: int) -> list[float]:
    """Median milliseconds per model (see :func:`turn_times`)."""
    return [statistics.median(t) for t in turn_times(models, inputs, runs)]


class OrtRunner:
    """onnxruntime session of the fused model exported at one size (2 intra-op threads)."""

    def __init__(self, model, size: int, threads: int, folder: str):
        import onnxruntime as ort

        from yolotr.engine.exporter import export_model

        path = export_model(model, "onnx", f"{folder}/m{size}.onnx", imgsz=size, dynamic=False).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor):
        return self.session.run(None, {"images": x.contiguous().numpy()})


E2E_IMAGES = ("bus.jpg", "zidane.jpg")


def end_to_end(args) -> None:
    """``--e2e``: milliseconds per image from the JPEG on disk to boxes on the original image.

    - yolotr: ``YOLO.predict(path)`` called in a loop (backend ``--backend``, default ``auto``), and the
      CLI's path, ``run_prediction`` over the images with the predictor ``yolotr predict`` builds
      (model loading and process start-up excluded: they happen once per command).
    - official: YOLOv5's ``detect.py`` steps: ``cv2.imread``, its ``letterbox`` (stride 32, ``auto``),
      HWC->CHW, BGR->RGB, ``/ 255``, the fused ``Model`` (``DetectMultiBackend`` fuses), its
      ``non_max_suppression`` and ``scale_boxes``, under ``torch.inference_mode``.

    Both sides hold the same weights (``yolov5n``: the official COCO checkpoint from ``shared/weights``;
    other models: yolotr's initial weights copied into the official ``Model``) and use conf 0.25,
    iou 0.45, max_det 1000. A run predicts every image once on each side, the sides taking turns
    (order alternating); the table gives the median over runs of ms per image. Importing ``yolov5``
    sets OpenCV to one thread (as in ``detect.py``); both sides run under that. ``--cpu-time`` (with
    ``--threads 1``) reads the process's CPU clock instead of the wall clock: one thread's work, which
    other processes on the machine hardly change (a shared machine's wall-clock ratios swing with its load).
    """
    import cv2
    import numpy as np
    from shared_data import shared_root

    from yolotr import YOLO
    from yolotr.engine.fast_backend import AutoCpuBackend
    from yolotr.engine.predictor import Predictor, run_prediction

    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from yolov5.models.yolo import Model
            from yolov5.utils.augmentations import letterbox as v5_letterbox
            from yolov5.utils.general import non_max_suppression as v5_nms
            from yolov5.utils.general import scale_boxes as v5_scale_boxes
    except ImportError as e:
        raise SystemExit(
            "--e2e needs the official YOLOv5 code: pip install --no-deps yolov5==7.0.14 (see pyproject)"
        ) from e
    finally:
        logging.disable(logging.NOTSET)
    torch.set_num_threads(args.threads)  # importing yolov5 may change it

    images = [str(shared_root() / "images" / name) for name in E2E_IMAGES]
    if args.cpu_time and args.threads != 1:
        raise SystemExit("--cpu-time needs --threads 1 (with more threads the CPU clock adds the threads' time up)")
    clock = time.process_time if args.cpu_time else time.perf_counter

    def official_detect(model, path: str, size: int) -> torch.Tensor:
        im0 = cv2.imread(path)
        im = v5_letterbox(im0, size, stride=32, auto=True)[0].transpose((2, 0, 1))[::-1]
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(im)).float()[None] / 255
            det = v5_nms(model(x)[0], 0.25, 0.45, None, False, max_det=1000)[0]
            det[:, :4] = v5_scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
        return det

    def timed_row(yolo, ref, size: int) -> dict[str, list[float]]:
        """ms per image of each run of YOLO.predict, the CLI's run_prediction and detect.py's steps."""
        settings = dict(imgsz=size, conf=0.25, iou=0.45, max_det=1000)
        cli = Predictor(yolo.model, yolo.names, **settings, backend=yolo.prepared_backend(args.backend))

        def ours(path):
            return yolo.predict(path, **settings, backend=args.backend, verbose=False)[0].boxes.data

        for path in images * AutoCpuBackend.TORCH_BATCHES:  # auto's PyTorch batches of each size
            ours(path)
        for path in images:  # warm-up (export, sessions) and the same boxes on both sides
            a, b = ours(path), official_detect(ref, path, size)
            if a.shape != b.shape or (len(a) and float((a[:, :4] - b[:, :4]).abs().max()) > 1.0):
                print(f"  note: {size} {path}: boxes differ from YOLOv5's ({len(a)} vs {len(b)})")
        steps = {
            "ours": lambda: [ours(p) for p in images],
            "cli": lambda: run_prediction(cli, images, None),
            "ref": lambda: [official_detect(ref, p, size) for p in images],
        }
        return alternating_ms(steps, args.runs, clock, len(images))

    load = os.getloadavg()
    print(
        f"end to end, fp32, batch 1, {args.threads} threads, median of {args.runs} runs over {len(images)} images "
        f"({', '.join(E2E_IMAGES)}), backend {args.backend}, {'CPU' if args.cpu_time else 'wall'} clock; "
        f"torch {torch.__version__}; {machine_line()}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"{'model':<12}{'size':>6}{'yolotr ms':>12}{'CLI ms':>10}{'YOLOv5 ms':>12}{'ratio':>8}{'CLI ratio':>11}"
        f"{'min ratio':>11}{'CLI min':>9}"
    )
    for name in args.models:
        weights = shared_root() / "weights" / f"{name}.pt"
        yolo = YOLO(weights if weights.is_file() else f"{name}.yaml", verbose=False)
        logging.disable(logging.INFO)
        with contextlib.redirect_stdout(io.StringIO()):
            ref = Model(str(find_model_yaml(name)), nc=yolo.model.nc)
            ref.load_state_dict(yolo.model.state_dict())
            ref = ref.fuse().eval()
        logging.disable(logging.NOTSET)
        torch.set_num_threads(args.threads)
        for size in args.sizes:
            times = timed_row(yolo, ref, size)
            t_ours, t_cli, t_ref = (statistics.median(times[key]) for key in ("ours", "cli", "ref"))
            m_ours, m_cli, m_ref = (min(times[key]) for key in ("ours", "cli", "ref"))
            print(
                f"{name:<12}{size:>6}{t_ours:12.1f}{t_cli:10.1f}{t_ref:12.1f}{t_ours / t_ref:8.2f}{t_cli / t_ref:11.2f}"
                f"{m_ours / m_ref:11.2f}{m_cli / m_ref:9.2f}"
            )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("ratio = yolotr / YOLOv5 of the medians, min ratio = of the fastest runs (what each takes when the machine")
    print("left it alone); end to end per image, lower is faster; target <= 0.70")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="add onnxruntime latency of the exported yolotr model")
    parser.add_argument(
        "--e2e", action="store_true", help="end to end per image (read, letterbox, forward, NMS) against detect.py"
    )
    parser.add_argument("--backend", default="auto", help="--e2e: yolotr's predict backend (auto, torch, onnx)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="--e2e with --threads 1: time with the process's CPU clock (what the work costs, whatever the load)",
    )
    parser.add_argument(
        "--contiguous",
        dest="channels_last",
        action="store_false",
        help="run yolotr in the default contiguous layout instead of channels_last (as its predictor)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.e2e:
        from latency_next import end_to_end_next

        nms_free = [m for m in args.models if m.startswith((*END2END_PREFIXES, "rtdetr"))]  # latency_next's
        if nms_free:
            end_to_end_next(argparse.Namespace(**{**vars(args), "models": nms_free}))
        args.models = [m for m in args.models if m not in nms_free]
        return end_to_end(args) if args.models else None
    layout = "channels_last" if args.channels_last else "contiguous"
    load = os.getloadavg()
    print(
        f"fp32, batch 1, {args.threads} threads, median of {args.runs}, fused, yolotr {layout}; "
        f"torch {torch.__version__}; {machine_line()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"{'model':<12}{'size':>6}{'yolotr ms':>12}{'ref ms':>12}{'ratio':>8}{'min ratio':>11}{'ref':>13}"
        + (f"{'ORT ms':>10}" if args.onnx else "")
    )
    folder = tempfile.mkdtemp()
    for name in args.models:
        ours = DetectionModel(f"{name}.yaml").fuse().eval()
        if args.channels_last:
            ours = ours.to(memory_format=torch.channels_last)
        ref = official_model(name)
        torch.set_num_threads(args.threads)  # importing a reference may change it
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            x_ours = x.to(memory_format=torch.channels_last) if args.channels_last else x
            if ref is None:
                (t_ours,), t_ref = median_ms([ours], [x_ours], args.runs), None
                ref_text = f"{'-':>12}{'-':>8}{'-':>11}{'-':>13}"
            else:
                ms_ours, ms_ref = turn_times([ours, ref], [x_ours, x], args.runs)
                t_ours, t_ref = statistics.median(ms_ours), statistics.median(ms_ref)
                # the fastest runs: what each model takes when the machine left it alone
                min_ratio = min(ms_ours) / min(ms_ref)
                ref_text = f"{t_ref:12.1f}{t_ours / t_ref:8.2f}{min_ratio:11.2f}{reference_label(name):>13}"
            if args.onnx:
                (t_ort,) = median_ms([OrtRunner(ours, size, args.threads, folder)], [x], args.runs)
                ref_text += f"{t_ort:10.1f}"
            print(f"{name:<12}{size:>6}{t_ours:12.1f}{ref_text}")
    print("ratio = yolotr / ref of the medians, min ratio = of the fastest runs (lower is faster; target <= 1.00")
    print(f"for YOLOv5, <= 0.90 for ultralytics); load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
