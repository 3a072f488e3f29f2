"""The ``yolotr`` command: argument parsing only; the work happens in the engine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from yolotr.errors import YolotrError

LOGGER = logging.getLogger("yolotr")


def increment_path(base: Path) -> Path:
    """``runs/predict/exp``, then ``exp2``, ``exp3``, ... : the first that does not exist yet."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")


def cmd_predict(args: argparse.Namespace) -> int:
    from yolotr.engine.predictor import Predictor, run_prediction
    from yolotr.models.loading import load_model

    model = load_model(args.model)
    if args.fuse:
        model.fuse()
    predictor = Predictor(
        model,
        model.names,
        args.imgsz,
        rect=not args.square,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        classes=args.classes,
        batch=args.batch,
    )
    save_dir = increment_path(Path(args.project) / args.name) if args.save or args.save_txt else None
    summary = run_prediction(predictor, args.source, save_dir, save_txt=args.save_txt)
    print(f"{summary['images']} images, {summary['detections']} detections")
    if save_dir is not None:
        print(f"results saved to {save_dir} (drawn images, predictions.json)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from yolotr.models.loading import load_model

    model = load_model(args.model, nc=args.nc)
    info = model.info(args.imgsz, verbose=False)
    print(info["table"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolotr", description="YOLO detectors with Transformer blocks")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("--model", required=True, help="model YAML or checkpoint (.pt/.pth)")
    p.add_argument("--source", required=True, help="image, folder, glob, .txt list or video")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--square", action="store_true", help="letterbox to a full square instead of a stride-aligned rectangle"
    )
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into convolutions")
    p.add_argument("--save", action="store_true", help="write drawn images and predictions.json")
    p.add_argument("--save-txt", action="store_true", help="write YOLO-format txt labels")
    p.add_argument("--project", default="runs/predict")
    p.add_argument("--name", default="exp")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", help="layer table, parameters and GFLOPs")
    p.add_argument("--model", required=True)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--nc", type=int, default=None)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except YolotrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
