"""``yolotr export``: argument parsing only; the work is in :mod:`yolotr.engine.exporter`.

``add_export_parser(subparsers)`` registers the command on the main parser's subparsers.
"""

from __future__ import annotations

import argparse
import logging

from yolotr.cli_args import imgsz_arg

LOGGER = logging.getLogger("yolotr")


def cmd_export(args: argparse.Namespace) -> int:
    from yolotr.data.imgsz import default_imgsz
    from yolotr.engine.exporter import export_destination, export_model
    from yolotr.engine.head_mode import parse_end2end
    from yolotr.engine.runs import select_device
    from yolotr.models.loading import load_model

    model = load_model(args.model, nc=args.nc)
    if args.device is not None and select_device(args.device).type != "cpu":  # checked, then traced on the CPU
        LOGGER.info(
            "--device %s: exported from the CPU (the float32 file is the same whichever device traces it)", args.device
        )
    path = export_destination(args.output, args.model, args.format)
    export_model(  # logs "exported <path>: max abs difference to PyTorch ..., detections match"
        model,
        args.format,
        path,
        imgsz=default_imgsz(args.imgsz, model),
        batch=args.batch,
        dynamic=not args.static,
        dynamic_size=args.dynamic_size,
        raw=args.raw,
        opset=args.opset,
        nms=args.nms,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        end2end=parse_end2end(args.end2end),
    )
    return 0


def add_export_parser(sub, device_help: str, end2end_help: str) -> None:
    """The ``export`` sub-command on ``sub`` (the main parser's subparsers)."""
    p = sub.add_parser("export", help="export to ONNX (checked with onnxruntime) or TorchScript")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument(
        "--imgsz", type=imgsz_arg, help="side or h,w (e.g. 480,640); default: the checkpoint's training size, else 640"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="images in the example input; with --static the file's fixed batch size (default 1)",
    )
    p.add_argument("--device", help=device_help)
    p.add_argument("--nc", type=int, default=None, help="classes when exporting a YAML")
    p.add_argument(
        "--output", help="output file (default: beside a checkpoint, best.pt -> best.onnx; a YAML's stem here)"
    )
    p.add_argument("--static", action="store_true", help="fixed batch size")
    p.add_argument("--dynamic-size", dest="dynamic_size", action="store_true", help="dynamic height and width")
    p.add_argument("--raw", action="store_true", help="raw head maps instead of decoded boxes")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--nms", action="store_true", help="NMS inside the ONNX graph: output (B, max-det, 6) x1 y1 x2 y2 score class"
    )
    p.add_argument("--conf", type=float, help="with --nms: confidence threshold fixed in the file (default 0.25)")
    p.add_argument("--iou", type=float, help="with --nms: NMS IoU threshold fixed in the file (default: predict's)")
    p.add_argument(
        "--max-det",
        dest="max_det",
        type=int,
        help="with --nms, or for an end-to-end (YOLOv10 / YOLO26) head: detections per image (default 300)",
    )
    p.add_argument("--end2end", choices=["on", "off", "auto"], help=end2end_help)
    p.set_defaults(func=cmd_export)
