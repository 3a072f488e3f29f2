"""The ``yolotr`` command: argument parsing only; the work happens in the engine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from yolotr.cli_args import any_case, imgsz_arg, number_arg, set_overrides, yaml_value  # noqa: F401 - set_overrides/yaml_value live on here by name
from yolotr.errors import YolotrError
from yolotr.export_cli import add_export_parser
from yolotr.logs import verbosity

LOGGER = logging.getLogger("yolotr")
DEVICE_HELP = "auto (default: CUDA when there is one), cpu, cuda, cuda:N or a GPU index N"
END2END_HELP = (
    "YOLOv10 / YOLO26 heads: on = the NMS-free one-to-one output (their default), off = the one-to-many "
    "branch with NMS (the ultralytics package's default), auto = the head's own"
)


def cmd_predict(args: argparse.Namespace) -> int:
    from yolotr.data.imgsz import default_imgsz
    from yolotr.engine.fast_backend import prepare_backend
    from yolotr.engine.predictor import Predictor, check_save_options, run_prediction
    from yolotr.engine.runs import next_run_dir
    from yolotr.models.loading import load_model

    check_save_options(args.save_txt, args.save_json, args.save_conf, args.data)

    from yolotr.engine.torchscript_model import is_exported_file, load_exported

    if is_exported_file(args.model):
        model = load_exported(args.model)
        if args.end2end not in (None, "auto"):
            LOGGER.warning("%s: an exported file's output was chosen at export; --end2end ignored", args.model)
        backend = prepare_backend(model, "torch")  # the file runs as it is
    else:
        from yolotr.engine.head_mode import set_end2end

        model = _on_device(load_model(args.model), args.device)
        set_end2end(model, args.end2end, max(args.max_det, 300), args.agnostic_nms, where="--end2end")
        backend = prepare_backend(model, args.backend, copy_model=False)  # fused in place: loaded to predict only
    predictor = Predictor(
        model,
        model.names,
        default_imgsz(args.imgsz, model),
        rect=not args.square,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        classes=args.classes,
        agnostic=args.agnostic_nms,
        batch=args.batch,
        backend=backend,
    )
    wanted = args.save or args.save_txt or args.save_json or args.save_crop
    save_dir = next_run_dir(args.project, args.name, args.exist_ok) if wanted else None
    summary = run_prediction(
        predictor, args.source, save_dir, save_txt=args.save_txt, save_json=args.save_json, save_images=args.save,
        save_conf=args.save_conf, data=args.data, save_crop=args.save_crop,
    )  # fmt: skip
    print(f"{summary['images']} images, {summary['detections']} detections")
    if save_dir is not None:
        print(f"results saved to {save_dir}")
    return 0


def _device(device: str):
    from yolotr.engine.runs import select_device

    return select_device(device)


def _end2end(value: str | None) -> bool | None:
    from yolotr.engine.head_mode import parse_end2end

    return parse_end2end(value)


def _on_device(model, device: str | None):
    """``model`` moved to ``--device`` (left where it is without one)."""
    return model if device is None else model.to(_device(device))


def cmd_info(args: argparse.Namespace) -> int:
    from yolotr.data.imgsz import check_imgsz, default_imgsz, largest_stride
    from yolotr.models.loading import load_model

    model = load_model(args.model, nc=args.nc)
    info = model.info(check_imgsz(default_imgsz(args.imgsz, model), largest_stride(model)), verbose=False)
    print(info["table"])
    return 0


def _overrides(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


# --optimizer, in any case (the YAML setting's habit): config.OPTIMIZER_NAMES, written out (no torch import here)
OPTIMIZERS = ("SGD", "AdamW", "MuSGD", "Adam", "Adamax", "NAdam", "RAdam", "RMSprop", "auto")
TRAIN_KEYS = (
    "model",
    "data",
    "epochs",
    "batch",
    "imgsz",
    "device",
    "workers",
    "seed",
    "optimizer",
    "lr0",
    "lr_transformer_scale",
    "freeze",
    "weights",
    "weights_rename",
    "project",
    "name",
    "save_period",
    "save_period_steps",
    "cache_ram",
    "sync_bn",
    "val",
    "autoanchor",
    "single_cls",
    "classes",
)


def cmd_train(args: argparse.Namespace) -> int:
    from yolotr.engine.trainer import Trainer

    overrides = _overrides(args, TRAIN_KEYS)
    if args.amp is not None:
        overrides["amp"] = args.amp
    overrides.update(set_overrides(args.set))
    if args.resume:
        run = args.resume
        if run is True:  # a bare --resume: the latest run under --project (which a resume does not change)
            from yolotr.engine.resume_state import latest_checkpoint

            run = latest_checkpoint(overrides.pop("project", None))
        trainer = Trainer.resume(run, **overrides)
    else:
        trainer = Trainer(overrides, cfg_file=args.cfg)
    trainer.train()  # its closing line (epochs, minutes, "results in <run directory>") is logged once
    _print_final_table(trainer)
    return 0


def _cfg_file(path: str) -> dict:
    from yolotr.engine.config import load_cfg_file

    return load_cfg_file(path)


SINGLE_CLS_HELP = "every class as one (YOLOv5's --single-cls); val: default the checkpoint's training setting"
IOU_HELP = "NMS IoU; default: the head's, {} for YOLOv5 / v4 (its {}), 0.7 for anchor-free and NMS-free heads"
COMPARE_KEYS = ("epochs", "batch", "imgsz", "device", "optimizer", "lr0", "lr_transformer_scale", "freeze", "weights")


def cmd_compare(args: argparse.Namespace) -> int:
    from yolotr.engine.compare import compare

    settings = {**(_cfg_file(args.cfg) if args.cfg else {}), **_overrides(args, COMPARE_KEYS)}
    if args.amp is not None:
        settings["amp"] = args.amp
    if args.autoanchor is not None:
        settings["autoanchor"] = args.autoanchor
    settings.update(set_overrides(args.set))
    result = compare(
        args.models,
        args.data,
        args.seeds,
        name=args.name,
        project=args.project,
        parallel=args.parallel,
        workers_per_run=args.workers_per_run,
        cpus_per_run=args.cpus_per_run,
        ray=args.ray,
        gpus_per_run=args.gpus_per_run,
        latency_runs=args.latency_runs,
        log_table=False,
        **settings,
    )
    print(result.report)  # stdout: `yolotr compare ... > out.txt` holds the table
    print(f"table: {result.save_dir / 'compare.md'}; plots: compare_map.png, compare_curves.png")
    return 0


def _print_final_table(trainer) -> None:
    """The last validation's table on stdout (``yolotr train ... > out.txt`` holds it); the logs stay on stderr."""
    last = getattr(trainer, "last_validation", None)
    if trainer.main and last is not None:
        print(last.table(per_class=len(trainer.names) > 1))


def cmd_val(args: argparse.Namespace) -> int:
    from yolotr.engine.validator import validate
    from yolotr.models.loading import load_model

    model = _on_device(load_model(args.model), args.device)
    result = validate(  # logs the speed line; the table goes to stdout
        model,
        args.data,
        split=args.split,
        imgsz=args.imgsz,
        batch_size=args.batch,
        conf=args.conf,
        iou=args.iou,
        workers=args.workers,
        log_table=False,
        save_dir=Path(args.save_dir) if args.save_dir else None,
        save_json=args.save_json,
        end2end=_end2end(args.end2end),
        single_cls=args.single_cls,
    )
    print(result.table(per_class=len(result.per_class) > 1))  # stdout: `yolotr val ... > out.txt` holds the table
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from yolotr.engine.demo import run_demo

    summary = run_demo(model=args.model, time_limit=args.minutes, project=args.project, name=args.name)
    print(summary["table"])
    print(
        f"demo done in {summary['seconds'] / 60:.1f} min: mAP50 {summary['map50']:.3f}, "
        f"mAP50-95 {summary['map50_95']:.3f}\n"
        f"run directory: {summary['save_dir']} (weights/, results.csv, results.png, PR_curve.png, "
        "confusion_matrix.png, predictions/)"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from yolotr.engine.explain import explain
    from yolotr.models.loading import load_model

    model = load_model(args.model)
    _, path = explain(model, args.source, args.layer, args.imgsz, args.out, args.project, args.name, args.box,
                      args.exist_ok)  # fmt: skip
    print(f"map of layer {args.layer} saved to {path}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from yolotr.data.check import check_data

    check = check_data(args.data, cache=not args.no_cache)
    print(check.text, end="")
    return check.exit_code


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (and so each sub-command's) that takes a flag only as written: argparse's default
    reads any unambiguous prefix, so YOLOv5's ``--save-period 5`` (epochs) became ``--save-period-steps 5``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yolotr", description="YOLO detectors with Transformer blocks")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("--model", required=True, help="model YAML or checkpoint (.pt/.pth)")
    p.add_argument("--source", required=True, help="image, folder, glob, .txt list or video")
    p.add_argument("--imgsz", type=imgsz_arg, help="side or h,w; default: the checkpoint's training size, else 640")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, help=IOU_HELP.format("0.45", "detect.py"))
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    p.add_argument("--agnostic-nms", action="store_true", help="NMS across classes (one box per object)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--square", action="store_true", help="letterbox to a full square instead of a stride-aligned rectangle"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: onnxruntime on the CPU (the model exported once, cached in $YOLOTR_CACHE/onnx), else "
        "PyTorch; torch: the fused model in PyTorch; onnx: always onnxruntime",
    )
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into convolutions (always done now; no effect)")
    p.add_argument("--save", action="store_true", help="write drawn images and predictions.json")
    p.add_argument("--save-txt", action="store_true", help="write YOLO-format txt labels (class cx cy w h)")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt: the confidence as a sixth column")
    p.add_argument("--save-json", action="store_true", help="write COCO-format detections (predictions_coco.json)")
    p.add_argument("--save-crop", action="store_true", help="write each detection's region (crops/<class>/<image>.jpg)")
    p.add_argument(
        "--data", help="with --save-json: a COCO-format dataset YAML whose image and category ids the file uses"
    )
    p.add_argument("--end2end", choices=["on", "off", "auto"], help=END2END_HELP)
    p.add_argument("--project", default="runs/predict")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="write into --project/--name even if it exists (no exp2)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train a detector (torchrun for several GPUs/processes)")
    p.add_argument("--model", help="model YAML or checkpoint to start from")
    p.add_argument("--data", help="dataset YAML, or 'shapes' for the built-in set")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="images per step and process")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--device")
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--optimizer", type=any_case(*OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--lr0", type=float)
    p.add_argument("--lr-transformer-scale", dest="lr_transformer_scale", help="a number, or auto")
    p.add_argument("--freeze", type=int, help="freeze the first N layers")
    p.add_argument("--weights", help="transfer matching weights from this checkpoint")
    p.add_argument("--weights-rename", dest="weights_rename", nargs="+", help="old=new key-prefix rules")
    p.add_argument(
        "--amp",
        choices=["auto", "fp16", "bf16", "false", "true", "on", "off"],
        help="mixed precision: auto (fp16 on CUDA, off on CPU), fp16 (with loss scaling), bf16, false; true (or on) = "
        "auto's fp16 on CUDA and bf16 on CPU",
    )
    p.add_argument(
        "--save-period", dest="save_period", type=int, help="keep weights/epoch<N>.pt every N epochs (YOLOv5's flag)"
    )
    p.add_argument("--save-period-steps", dest="save_period_steps", type=int, help="rewrite last.pt every N steps")
    p.add_argument("--cache-ram", dest="cache_ram", action="store_true", default=None)
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None)
    p.add_argument("--single-cls", dest="single_cls", action="store_true", default=None, help=SINGLE_CLS_HELP)
    p.add_argument("--classes", type=int, nargs="+", help="train (and validate) on the objects of these class ids only")
    p.add_argument("--no-val", dest="val", action="store_false", default=None)
    p.add_argument(
        "--noautoanchor",
        dest="autoanchor",
        action="store_false",
        default=None,
        help="keep the model's anchors (default: refit them to the labels when best possible recall <= 0.98)",
    )
    p.add_argument("--project")
    p.add_argument("--name")
    p.add_argument("--cfg", help="a YAML of settings overriding cfg/default.yaml")
    p.add_argument(
        "--set", nargs="+", action="extend", metavar="KEY=VALUE", help="any other setting of cfg/default.yaml"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN_DIR",
        help="continue runs/train/expN from weights/last.pt; without RUN_DIR the latest run under --project",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="train models x seeds under the same settings; mAP mean ± sd and paired 95%% intervals",
        description="Train every model with every seed under identical settings (runs/compare/NAME/<model>-seed<k>/, "
        "ordinary run directories), then write and print one table: params, GFLOPs, CPU latency, mAP50 and "
        "mAP50-95 as mean ± sd over seeds, and each model's difference to the first with a 95% interval from "
        "the per-seed paired differences. Re-running the same command skips finished runs and resumes "
        "interrupted ones.",
    )
    p.add_argument("--models", nargs="+", required=True, help="model YAMLs or checkpoints; the first is the baseline")
    p.add_argument("--data", default="shapes", help="dataset YAML, or 'shapes' for the built-in set")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model: 0 .. N-1 (default 3)")
    p.add_argument("--name", default="exp", help="the comparison's folder under --project; the same name resumes it")
    p.add_argument("--project", default="runs/compare")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--device")
    p.add_argument("--optimizer", type=any_case(*OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--lr0", type=float)
    p.add_argument("--lr-transformer-scale", dest="lr_transformer_scale", help="a number, or auto")
    p.add_argument("--freeze", type=int)
    p.add_argument("--weights", help="transfer matching weights from this checkpoint into every model")
    p.add_argument("--amp", choices=["auto", "fp16", "bf16", "false", "true", "on", "off"])
    p.add_argument("--noautoanchor", dest="autoanchor", action="store_false", default=None)
    p.add_argument("--cfg", help="a YAML of settings overriding cfg/default.yaml")
    p.add_argument(
        "--set", nargs="+", action="extend", metavar="KEY=VALUE", help="any other setting of cfg/default.yaml"
    )
    p.add_argument("--parallel", type=int, default=1, help="local runs at once (default 1)")
    p.add_argument(
        "--workers-per-run", dest="workers_per_run", type=number_arg(int, ">= 0"), help="DataLoader workers of each run"
    )
    p.add_argument(
        "--cpus-per-run",
        dest="cpus_per_run",
        type=number_arg(int, ">= 1"),
        help="torch threads of each run (default: CPUs / parallel)",
    )
    p.add_argument("--ray", metavar="ADDRESS", help="run each training as a Ray task: auto, local or ray://host:port")
    p.add_argument(
        "--gpus-per-run", dest="gpus_per_run", type=number_arg(float, ">= 0"), default=0, help="GPUs per Ray task"
    )
    p.add_argument(
        "--latency-runs",
        dest="latency_runs",
        type=number_arg(int, ">= 0"),
        default=30,
        help="timed passes for CPU latency (0: none)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("val", help="COCO mAP of a model on a dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="dataset YAML or 'shapes' (default: the data a yolotr checkpoint was trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, help="default: the checkpoint's training size, else 640")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, help=IOU_HELP.format("0.6", "val.py"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--save-dir", dest="save_dir", help="write PR curve and confusion matrix here")
    p.add_argument(
        "--save-json",
        action="store_true",
        help="write predictions_coco.json (the dataset's own ids) into --save-dir (default runs/val/exp); on a "
        "COCO-format dataset also score it against the split's JSON with faster-coco-eval",
    )
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--end2end", choices=["on", "off", "auto"], help=END2END_HELP)
    p.add_argument("--single-cls", dest="single_cls", action="store_true", default=None, help=SINGLE_CLS_HELP)
    p.set_defaults(func=cmd_val)

    add_export_parser(sub, DEVICE_HELP, END2END_HELP)

    p = sub.add_parser("demo", help="train a small Transformer YOLO on the built-in shapes set, validate, predict")
    p.add_argument("--model", help="model YAML (default: yolov5n-transformerc3.yaml)")
    p.add_argument("--minutes", type=float, help="training time budget (default 3.0)")
    p.add_argument("--project", default="runs/demo")
    p.add_argument("--name", default="exp")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("explain", help="overlay a layer's attention (or Grad-CAM for conv layers) on an image")
    p.add_argument("--model", required=True, help="model YAML or checkpoint (.pt/.pth)")
    p.add_argument("--source", required=True, help="one image")
    p.add_argument("--layer", type=int, required=True, help="YAML layer index (see `yolotr info`)")
    p.add_argument("--imgsz", type=imgsz_arg, default=640, help="side or h,w")
    p.add_argument("--out", help="PNG to write (default <image>_layer<N>.png in a new --project/--name folder)")
    p.add_argument("--exist-ok", action="store_true", help="replace an existing --out file")
    p.add_argument("--project", default="runs/explain")
    p.add_argument("--name", default="exp", help="run folder under --project: exp, then exp2, exp3, ...")
    p.add_argument("--box", type=int, default=0, help="RT-DETR head layer: rank of the detection to draw (0: top)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "check-data",
        help="validate a dataset: problems per file and line, class counts",
        description="Validate every split of a dataset: each problem once per split as "
        "file:line: severity: message, a headline per split (images usable, left out and why) "
        "and a table of images and boxes per class. An image whose labels have an error is left "
        "out of training and validation; a warning was repaired and the image is used.",
        epilog="exit codes: 0 no errors (clean, or warnings only); 1 errors (images left out or "
        "label files ignored); 2 the dataset YAML cannot be read; 3 a split has no usable image.",
    )
    p.add_argument("--data", required=True, help="dataset YAML, or 'shapes' for the built-in set")
    p.add_argument("--no-cache", dest="no_cache", action="store_true", help="revalidate, ignoring the label cache")
    p.set_defaults(func=cmd_check_data)

    from yolotr.caption_cli import add_caption_parser

    add_caption_parser(sub)

    p = sub.add_parser("info", help="layer table, parameters and GFLOPs")
    p.add_argument("--model", required=True)
    p.add_argument("--imgsz", type=int, help="default: the checkpoint's training size, else 640")
    p.add_argument("--nc", type=int, default=None)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from yolotr.cli_args import expand_key_values, reject_unknown

    parser = build_parser()
    argv = expand_key_values(parser, list(sys.argv[1:] if argv is None else argv))  # key=value as `yolo` takes it
    args, extras = parser.parse_known_args(argv)
    if extras:
        reject_unknown(parser, argv, extras)  # the sub-command's usage and the nearest flags; exits 2
    with verbosity(logging.DEBUG if args.verbose else logging.INFO):  # the yolotr logger, as a Python user gets it
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
