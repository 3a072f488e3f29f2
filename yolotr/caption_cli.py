"""``yolotr caption train | val | predict``: argument parsing only; the work is in ``engine.caption_trainer``.

``add_caption_parser(subparsers)`` registers the ``caption`` command on the main parser's subparsers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yolotr.cli_args import number_arg
from yolotr.engine.caption_settings import DEFAULTS

_HELP = {
    "data": "'shapes' (built-in) or a caption dataset YAML (COCO captions JSON files)",
    "resume": "a last.pt to continue training from",
    "time_limit": "minutes of training, a float (0.5 = 30 s; 0: no limit); when set it ends the run, not --epochs",
    "layer": "backbone layer whose features are the visual memory",
    "encoder": "backbone (detection YAML layers) or patch (ViT patch embedding)",
    "weights": "detection checkpoint to initialise the backbone from",
}


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    for key, default in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        help_text = _HELP.get(key, "") + f" (default: {default})"
        if isinstance(default, bool) or key == "amp":
            p.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif default is None:
            p.add_argument(flag, dest=key, default=None, help=help_text)
        else:
            p.add_argument(flag, dest=key, type=type(default), default=None, help=help_text)


def cmd_caption_train(args: argparse.Namespace) -> int:
    from yolotr.engine.caption_trainer import CaptionTrainer

    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    result = CaptionTrainer(overrides).train()
    _print_scores(result)
    print(f"results saved to {result['save_dir']}")
    return 0


def cmd_caption_val(args: argparse.Namespace) -> int:
    from yolotr.data.captions import CaptionDataset, load_caption_data
    from yolotr.engine.caption_predict import check_caption_imgsz
    from yolotr.engine.caption_trainer import evaluate, load_captioner
    from yolotr.engine.runs import select_device

    device = str(select_device(args.device or "cpu"))  # checked: an unknown name or a missing GPU is a ConfigError
    model, vocab, ckpt = load_captioner(args.model, device)
    saved = {**DEFAULTS, **(ckpt.get("args") or {})}
    data = {**saved, "data": args.data or saved["data"]}
    if args.n_val is not None:
        data["n_val"] = args.n_val
    imgsz = check_caption_imgsz(model, args.imgsz or int(ckpt["imgsz"]))
    _, val_set = load_caption_data(data)
    dataset = CaptionDataset(val_set, vocab, imgsz, model.max_len, train=False, cache=False)
    scores, _ = evaluate(
        model, vocab, dataset, args.batch, args.beam, device, args.length_penalty,
        args.repetition_penalty,
    )  # fmt: skip
    print(f"{len(val_set)} images, {'greedy' if args.beam <= 1 else f'beam {args.beam}'}")
    _print_scores(scores)
    return 0


def cmd_caption_predict(args: argparse.Namespace) -> int:
    from yolotr.data.images import iter_frames
    from yolotr.engine.caption_predict import caption_images, save_attention_figure
    from yolotr.engine.caption_trainer import load_captioner
    from yolotr.engine.runs import next_run_dir, select_device

    model, vocab, ckpt = load_captioner(args.model, select_device(args.device or "cpu"))
    imgsz = args.imgsz or int(ckpt["imgsz"])
    save_dir = next_run_dir(args.project, args.name) if args.attention or args.save else None
    results, figures = [], set()
    for frame in iter_frames(args.source):
        captions, maps = caption_images(
            model, vocab, [frame.image], imgsz, args.beam, args.length_penalty, args.repetition_penalty,
            attention=args.attention,
        )  # fmt: skip
        entry = {"path": frame.path, "caption": captions[0]}
        if frame.frame is not None:
            entry["frame"] = frame.frame
        if maps is not None:
            stem = Path(frame.path).stem + (f"_{frame.frame + 1}" if frame.frame is not None else "")  # from 1
            name, n = f"{stem}_attention.png", 2
            while name in figures:  # a.jpg and a.png in one folder: a_attention.png, a_attention_2.png
                name, n = f"{stem}_attention_{n}.png", n + 1
            figures.add(name)
            entry["attention"] = str(save_attention_figure(frame.image, captions[0], maps[0], save_dir / name))
        results.append(entry)
        at = f" frame {frame.frame + 1}" if frame.frame is not None else ""
        print(f"{frame.path}{at}: {captions[0]}")
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "captions.json").write_text(json.dumps(results, indent=1))
        print(f"results saved to {save_dir}")
    return 0


def _print_scores(scores: dict) -> None:
    from yolotr.metrics.captioning import format_scores

    print(format_scores(scores))


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="caption checkpoint (best.pt / last.pt)")
    p.add_argument("--beam", type=number_arg(int, ">= 1"), default=1, help="beam width (1: greedy)")
    p.add_argument("--length-penalty", type=number_arg(float, ">= 0"), default=1.0, help="beam score / length ** this")
    p.add_argument(
        "--repetition-penalty", type=number_arg(float, ">= 1"), default=1.0, help=">1 discourages repeated words"
    )
    p.add_argument("--imgsz", type=number_arg(int, ">= 1"), default=None, help="default: the training size")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cpu)")


def add_caption_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``caption train|val|predict`` on an ``argparse`` subparsers object; returns the ``caption`` parser."""
    caption = subparsers.add_parser("caption", help="image captioning: train, val, predict")
    sub = caption.add_subparsers(dest="caption_command", required=True)

    p = sub.add_parser("train", help="train a captioner (runs/caption/<name>/)")
    _add_training_flags(p)
    p.set_defaults(func=cmd_caption_train)

    p = sub.add_parser("val", help="BLEU-1..4 and CIDEr-D of a caption checkpoint")
    _add_decoding_flags(p)
    p.add_argument("--data", default=None, help="default: the training data")
    p.add_argument("--n-val", type=number_arg(int, ">= 1"), default=None, help="shapes only: validation images")
    p.add_argument("--batch", type=number_arg(int, ">= 1"), default=64)
    p.set_defaults(func=cmd_caption_val)

    p = sub.add_parser("predict", help="caption images, folders, globs or videos")
    _add_decoding_flags(p)
    p.add_argument("--source", required=True, help="image, folder, glob, .txt list or video")
    p.add_argument("--attention", action="store_true", help="per-word attention grids (and captions.json)")
    p.add_argument("--save", action="store_true", help="write captions.json")
    p.add_argument("--project", default="runs/caption/predict")
    p.add_argument("--name", default="exp")
    p.set_defaults(func=cmd_caption_predict)
    return caption
