"""Caption training and validation (prediction: :mod:`yolotr.engine.caption_predict`).

Data (:mod:`yolotr.data.captions`): the built-in shapes captions (``data="shapes"``, generated once
into ``$YOLOTR_CACHE``) or a dataset YAML ``{path, train, val, train_images?, val_images?}`` whose
``train``/``val`` are COCO captions JSON files (``images`` with ``id`` and ``file_name``,
``annotations`` with ``image_id`` and ``caption``; several captions per image) or ``{image path:
caption or [captions]}`` mappings like the shapes ``captions.json``.

Training: cross-entropy with label smoothing ignoring ``<pad>``, AdamW (no decay on norms, biases,
embeddings and positions), linear warmup then cosine on the fraction of the run done (of ``epochs``,
or of ``time_limit`` minutes when that is set: then the clock ends the run, as in detection
training), AMP, gradient clipping. :data:`DEFAULTS` are the settings ``bench/caption.py`` measures
(on the shapes set, BLEU-4 0.53-0.56 in 290 s on 2 idle CPU threads, issue 18). The run directory
``runs/caption/<name>/`` holds ``weights/last.pt`` (resumable: with the random states and the loss scale, a
resumed run trains on as the uninterrupted one), ``weights/best.pt`` (highest CIDEr-D),
``results.csv``, ``args.yaml`` and ``results.png``.
"""

from __future__ import annotations

import csv
import logging
import math
import pickle
import random
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from yolotr.data.captions import CaptionDataset, CaptionSet, collate_captions, load_caption_data, to_float
from yolotr.engine.caption_predict import check_caption_imgsz
from yolotr.engine.caption_settings import DEFAULTS
from yolotr.engine.config import in_range
from yolotr.engine.runs import next_run_dir, select_device
from yolotr.engine.tensorboard import TensorBoardLogger
from yolotr.errors import CheckpointError, ConfigError
from yolotr.metrics.captioning import METRIC_NAMES, caption_scores, format_scores
from yolotr.models.captioning import CaptioningModel, caption_loss, ids_to_captions
from yolotr.models.checkpoint_sniff import sniff_checkpoint
from yolotr.models.vocab import Vocabulary
from yolotr.models.weights import check_zip_crc, save_checkpoint, torch_load

LOGGER = logging.getLogger("yolotr")
FORMAT_VERSION = 1

# the values a numeric caption setting accepts (:func:`yolotr.engine.config.in_range` rules); max_len 3 holds
# <start>, one word and <end>
CAPTION_RANGES = {
    **dict.fromkeys(("n_train", "n_val", "imgsz", "patch", "vit_depth", "dim", "layers", "heads"), ">= 1"),
    **dict.fromkeys(("min_count", "epochs", "batch", "val_beam"), ">= 1"),
    "max_len": ">= 3",
    "workers": ">= 0",
    "dropout": "[0, 1)",
    "lr": "> 0",
    "weight_decay": ">= 0",
    "warmup": "[0, 1]",
    "label_smoothing": "[0, 1)",
    "clip": ">= 0",
}
CAPTION_WHOLE = {"n_train", "n_val", "imgsz", "patch", "vit_depth", "dim", "layers", "heads", "min_count", "epochs"}
CAPTION_WHOLE |= {"batch", "max_len", "seed", "val_beam", "workers"}
CAPTION_FLAGS = ("freeze", "grad_checkpointing", "plots")


def check_caption_settings(args: dict) -> None:
    """Refuse a numeric caption setting of the wrong kind or out of :data:`CAPTION_RANGES`, or a flag
    (:data:`CAPTION_FLAGS`) other than true or false, naming it (they failed deep inside OpenCV or torch, or
    trained nothing: ``max_len 1`` fits no word).

    Raises:
        ConfigError: naming the setting, its rule and the value.
    """
    for key in CAPTION_FLAGS:
        if not isinstance(args.get(key), bool):
            raise ConfigError(f"caption setting '{key}' must be true or false, got {args.get(key)!r}")
    for key in CAPTION_WHOLE | set(CAPTION_RANGES):
        value = args.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"caption setting '{key}' must be a number, got {value!r}")
        if key in CAPTION_WHOLE and not float(value).is_integer():
            raise ConfigError(f"caption setting '{key}' must be a whole number, got {value!r}")
        rule = CAPTION_RANGES.get(key)
        if rule is not None and not in_range(value, rule):
            where = f"in {rule}" if rule[0] in "[(" else rule
            raise ConfigError(f"caption setting '{key}' must be {where}, got {value!r}")


# ------------------------------------------------------------------------------------------- training


# ------------------------------------------------------------------------------------------ checkpoints


def caption_checkpoint(model: CaptioningModel, vocab: Vocabulary, imgsz: int, **extra) -> dict:
    """Our caption checkpoint: plain types and tensors only (``torch.load(weights_only=True)`` loadable)."""
    return {
        "format": "yolotr",
        "format_version": FORMAT_VERSION,
        "task": "caption",
        "model_config": model.config,
        "vocab": vocab.to_dict(),
        "imgsz": int(imgsz),
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        **extra,
    }


def _read_caption_checkpoint(path: Path) -> dict:
    """The dict of a caption checkpoint file, or a :class:`CheckpointError` saying what the file is instead: not
    a checkpoint at all (an HTML page, a text file, ...), a detection checkpoint (ours, or YOLOv5's / the
    ``ultralytics`` package's, which hold pickled objects), or a damaged one (in the words of
    :func:`~yolotr.models.weights.torch_load`)."""
    kind, looks = sniff_checkpoint(path)
    if kind == "other":
        raise CheckpointError(f"{path}: not a checkpoint: it looks like {looks}")
    if kind == "zip":
        check_zip_crc(path)  # torch's reader would load changed tensor bytes as they are
    elsewhere = (
        "not a caption checkpoint: it predicts with 'yolotr predict'; a caption checkpoint comes from "
        "'yolotr caption train'"
    )
    try:
        ckpt = torch_load(path, weights_only=True)  # a damaged file: CheckpointError saying what it looks like
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: a checkpoint holding pickled objects, as the detection checkpoints of YOLOv5 and the "
            f"ultralytics package do; {elsewhere}"
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("task") == "caption":
        return ckpt
    if isinstance(ckpt, dict) and ckpt.get("format") == "yolotr" and "model_yaml" in ckpt:
        raise CheckpointError(f"{path}: a yolotr detection checkpoint, {elsewhere}")
    raise CheckpointError(f"{path}: not a yolotr caption checkpoint (train one with 'yolotr caption train')")


def load_captioner(path: str | Path, device: str | torch.device = "cpu") -> tuple[CaptioningModel, Vocabulary, dict]:
    """A caption checkpoint -> (model in eval mode, vocabulary, the whole checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such caption checkpoint")
    ckpt = _read_caption_checkpoint(path)
    model = CaptioningModel.from_config(ckpt["model_config"])
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), Vocabulary.from_dict(ckpt["vocab"]), ckpt


# ----------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: CaptioningModel,
    vocab: Vocabulary,
    dataset: CaptionDataset,
    batch: int = 64,
    beam: int = 1,
    device: torch.device | str = "cpu",
    length_penalty: float = 1.0,
    repetition_penalty: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[dict[str, float], list[str]]:
    """Validation loss (first reference, teacher forcing) and BLEU-1..4 / CIDEr-D of generated captions.

    Returns ``({"loss", "BLEU-1", ..., "CIDEr-D"}, generated captions in dataset order)``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collate_captions)
    hyps: list[str] = [""] * len(dataset)
    total, count = 0.0, 0
    for images, tokens, index in loader:
        x, tokens = to_float(images, device), tokens.to(device)
        memory, _ = model.encode(x)
        logits, _ = model.decode(tokens[:, :-1], memory)
        n = int((tokens[:, 1:] != Vocabulary.PAD).sum())
        total += float(caption_loss(logits, tokens[:, 1:], label_smoothing)) * n
        count += n
        if beam > 1:
            ids = model.beam_search(x, beam, None, length_penalty, repetition_penalty)[0]
        else:
            ids = model.greedy(x, None, repetition_penalty)
        for i, text in zip(index.tolist(), ids_to_captions(ids, vocab)):
            hyps[i] = text
    model.train(was_training)
    scores = caption_scores(hyps, dataset.data.captions)
    return {"loss": total / max(count, 1), **scores}, hyps


# ------------------------------------------------------------------------------------------- training


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in ("embed.weight", "pos") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _random_states(loader_gen: torch.Generator, scaler: torch.amp.GradScaler, device: torch.device) -> dict:
    """What the next epoch draws from (its shuffle, the reference caption each image gets, dropout) and the fp16
    loss scale, so that a resumed run goes on as the uninterrupted one (it shuffled as in the first epoch)."""
    return {
        "loader": loader_gen.get_state(),
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "scaler": scaler.state_dict(),
    }


def _restore_random_states(
    states: dict | None, loader_gen: torch.Generator, scaler: torch.amp.GradScaler, device: torch.device
) -> None:
    """Put back :func:`_random_states` (a checkpoint written before they were kept has none: nothing to do)."""
    if not states:
        return
    loader_gen.set_state(states["loader"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
    if states.get("scaler"):
        scaler.load_state_dict(states["scaler"])


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warmup over the first ``warmup`` of the run, then cosine to 1% of the peak."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    p = min((progress - warmup) / max(1.0 - warmup, 1e-8), 1.0)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))


def _warn_if_shorter_than_a_step(minutes: float, step_seconds: float) -> None:
    """Warn when a time limit (minutes) is shorter than the training step just timed: it cannot be meant."""
    if minutes * 60.0 < step_seconds:
        LOGGER.warning(
            "time_limit %g min (%.2g s) is shorter than one training step (%.2f s), so training stops after one "
            "step; time_limit is in minutes (0.5 = 30 s)",
            minutes,
            minutes * 60.0,
            step_seconds,
        )


def plot_results(csv_path: Path, out: Path) -> None:
    """Training and validation loss, and BLEU-4 / CIDEr-D per epoch, from ``results.csv`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for key in ("train_loss", "val_loss"):
        axes[0].plot(epochs, [float(r[key]) for r in rows], marker=".", label=key)
    axes[0].set_title("loss")
    axes[0].legend()
    for ax, key in zip(axes[1:], ("BLEU-4", "CIDEr-D")):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".")
        ax.set_title(key)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


class CaptionTrainer:
    """Trains a :class:`CaptioningModel`. ``CaptionTrainer(overrides).train()`` -> final metrics dict.

    ``overrides`` are keys of :data:`DEFAULTS`; ``resume="runs/caption/exp/weights/last.pt"`` continues
    that run in its own directory with its saved arguments (``epochs`` and ``time_limit`` may be raised).
    """

    def __init__(self, overrides: dict | None = None):
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown caption training keys: {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
        self.resume_ckpt = None
        if overrides.get("resume"):
            path = Path(overrides["resume"])
            _, _, ckpt = load_captioner(path)
            if "optimizer" not in ckpt:
                raise CheckpointError(f"{path}: has no optimizer state; resume from a last.pt")
            self.resume_ckpt = ckpt
            args = {**DEFAULTS, **ckpt["args"]}
            resumable = ("epochs", "time_limit", "device", "workers", "plots")
            args.update({k: v for k, v in overrides.items() if k in resumable})
            ignored = sorted(k for k, v in overrides.items() if k not in (*resumable, "resume") and v != args.get(k))
            if ignored:
                LOGGER.warning("resume continues with the run's own settings; ignoring %s (a resume takes %s; start "
                               "a new run to change them)", ", ".join(ignored), ", ".join(resumable))  # fmt: skip
            check_caption_settings(args)
            if not args["time_limit"] and ckpt["epoch"] + 1 >= args["epochs"]:
                raise ConfigError(
                    f"{path}: the run finished its {args['epochs']} epochs; give more epochs (--epochs N) to go on"
                )
            args["resume"] = str(path)
            self.save_dir = path.parent.parent
        else:
            args = {**DEFAULTS, **overrides}
            check_caption_settings(args)  # before the run folder is made
            self.save_dir = next_run_dir(args["project"], str(args["name"]), bool(args["exist_ok"]))
        limit = args["time_limit"] or 0.0
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit < math.inf:
            raise ConfigError(f"time_limit must be a number of minutes >= 0 (0: no limit), got {limit!r}")
        args["time_limit"] = float(limit)
        self.args = args
        self.device = select_device(str(args["device"] or "auto"))

    def _build(self, train_set: CaptionSet) -> tuple[CaptioningModel, Vocabulary]:
        a = self.args
        if self.resume_ckpt is not None:
            model, vocab, _ = load_captioner(a["resume"])
            return model, vocab
        vocab = Vocabulary.build((c for caps in train_set.captions for c in caps), a["min_count"])
        if len(vocab) == len(Vocabulary.SPECIALS):  # every caption would be <unk> words: trained for nothing
            raise ConfigError(f"min_count {a['min_count']}: no word of the training captions is that frequent, so "
                              "the vocabulary would hold no word; lower it")  # fmt: skip
        if a["encoder"] == "patch":
            if a["weights"]:
                raise ConfigError("weights initialise a backbone encoder; encoder 'patch' has none (remove weights)")
            enc = {"type": "patch", "patch": a["patch"], "depth": a["vit_depth"]}
        elif a["encoder"] == "backbone":
            if a["weights"] and a["backbone"] != DEFAULTS["backbone"]:
                raise ConfigError(f"backbone {a['backbone']!r} and weights {a['weights']!r}: the checkpoint brings "
                                  "its own model; give one of them")  # fmt: skip
            enc = {"type": "backbone", "cfg": a["backbone"], "layer": a["layer"], "freeze": a["freeze"]}
            enc["weights"] = a["weights"]
        else:
            raise ConfigError(f"encoder must be 'backbone' or 'patch', got {a['encoder']!r}")
        torch.manual_seed(a["seed"])
        model = CaptioningModel(
            len(vocab), enc, a["dim"], a["layers"], a["heads"], max_len=a["max_len"], positions=a["positions"],
            dropout=a["dropout"], grad_checkpointing=a["grad_checkpointing"],
        )  # fmt: skip
        return model, vocab

    def train(self) -> dict:
        a, device = self.args, self.device
        random.seed(a["seed"])
        train_set, val_set = load_caption_data(a)
        model, vocab = self._build(train_set)
        check_caption_imgsz(model, a["imgsz"])
        model.check_beam(a["val_beam"], "val_beam")  # before training, not at its first validation
        model.to(device).train()
        n_params = sum(p.numel() for p in model.parameters())
        LOGGER.info("caption model: %d parameters, vocabulary %d, encoder %s", n_params, len(vocab), a["encoder"])
        train_ds = CaptionDataset(train_set, vocab, a["imgsz"], a["max_len"], train=True, cache=True)
        val_ds = CaptionDataset(val_set, vocab, a["imgsz"], a["max_len"], train=False, cache=True)
        if len(val_ds) < 2:  # every n-gram's idf is log(1) = 0: CIDEr-D is 0 whatever the captions
            LOGGER.warning("one validation image: CIDEr-D is always 0 on one image, so best.pt goes by BLEU-4")
        gen = torch.Generator().manual_seed(a["seed"])
        loader = DataLoader(
            train_ds, batch_size=a["batch"], shuffle=True, drop_last=len(train_ds) > a["batch"], generator=gen,
            collate_fn=collate_captions, num_workers=a["workers"],
        )  # fmt: skip
        opt = torch.optim.AdamW(_param_groups(model, a["weight_decay"]), lr=a["lr"], betas=(0.9, 0.98))
        amp = a["amp"] if a["amp"] is not None else device.type == "cuda"
        amp_dtype = torch.bfloat16
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            amp_dtype = torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
        total_steps = a["epochs"] * len(loader)
        start_epoch, step, best, elapsed0 = 0, 0, -1.0, 0.0
        if self.resume_ckpt is not None:
            opt.load_state_dict(self.resume_ckpt["optimizer"])
            _restore_random_states(self.resume_ckpt.get("random_states"), gen, scaler, device)
            start_epoch, step = self.resume_ckpt["epoch"] + 1, self.resume_ckpt["step"]
            best, elapsed0 = self.resume_ckpt["best_fitness"], self.resume_ckpt["elapsed"]
            LOGGER.info("resuming %s from epoch %d", a["resume"], start_epoch + 1)
        weights = self.save_dir / "weights"
        weights.mkdir(parents=True, exist_ok=True)
        (self.save_dir / "args.yaml").write_text(yaml.safe_dump({**a, "amp": amp}, sort_keys=False))
        csv_path = self.save_dir / "results.csv"
        fields = ["epoch", "train_loss", "val_loss", *METRIC_NAMES, "lr", "time"]
        if self.resume_ckpt is None or not csv_path.exists():
            with open(csv_path, "w", newline="") as f:
                csv.writer(f).writerow(fields)
        tb = TensorBoardLogger(self.save_dir)  # a no-op without tensorboard
        t0 = time.monotonic() - elapsed0
        limit = 60.0 * float(a["time_limit"] or 0)  # seconds; with a limit the clock, not epochs, ends the run
        metrics: dict = {}
        first_step = True
        epoch = start_epoch - 1

        def go_on() -> bool:  # with a limit, the first epoch of a (resumed) run always starts
            if limit:
                return epoch < start_epoch or time.monotonic() - t0 < limit
            return epoch + 1 < a["epochs"]

        while go_on():
            epoch += 1
            model.train()
            running, seen = 0.0, 0
            of = f"{a['time_limit']:g} min" if limit else str(a["epochs"])
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{of}", leave=False)
            for images, tokens, _ in bar:
                step_t0 = time.monotonic()
                progress = (step_t0 - t0) / limit if limit else step / max(total_steps, 1)
                lr = a["lr"] * lr_factor(min(progress, 1.0), a["warmup"])
                for g in opt.param_groups:
                    g["lr"] = lr
                x, tokens = to_float(images, device), tokens.to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = model(x, tokens[:, :-1])
                loss = caption_loss(logits, tokens[:, 1:], a["label_smoothing"])
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if a["clip"]:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), a["clip"])
                scaler.step(opt)
                scaler.update()
                step += 1
                running += float(loss.detach()) * len(images)
                seen += len(images)
                bar.set_postfix(loss=f"{running / seen:.3f}", lr=f"{lr:.2e}")
                if limit and first_step:
                    first_step = False
                    _warn_if_shorter_than_a_step(a["time_limit"], time.monotonic() - step_t0)
                if limit and time.monotonic() - t0 >= limit:
                    break
            out_of_time = bool(limit and time.monotonic() - t0 >= limit)
            metrics, hyps = evaluate(  # the training loss's smoothing: the two loss curves of results.png compare
                model, vocab, val_ds, max(a["batch"], 64), a["val_beam"], device, label_smoothing=a["label_smoothing"]
            )
            elapsed = time.monotonic() - t0
            row = [epoch + 1, running / max(seen, 1), metrics["loss"], *(metrics[k] for k in METRIC_NAMES), lr, elapsed]
            with open(csv_path, "a", newline="") as f:
                csv.writer(f).writerow([f"{v:.5g}" if isinstance(v, float) else v for v in row])
            LOGGER.info(
                "epoch %d/%s  train %.3f  val %.3f  %s  (%.0fs)", epoch + 1, of, row[1], metrics["loss"],
                format_scores(metrics), elapsed,
            )  # fmt: skip
            tb.caption_epoch(epoch, row[1], lr, metrics, val_ds, hyps)
            fitness = metrics["CIDEr-D"] if len(val_ds) > 1 else metrics["BLEU-4"]
            common = {"epoch": epoch, "step": step, "elapsed": elapsed, "args": dict(a), "metrics": dict(metrics)}
            if fitness > best:
                best = fitness
                save_checkpoint(
                    caption_checkpoint(model, vocab, a["imgsz"], best_fitness=best, **common), weights / "best.pt"
                )
            ckpt = caption_checkpoint(
                model, vocab, a["imgsz"], best_fitness=best, optimizer=opt.state_dict(),
                random_states=_random_states(gen, scaler, device), **common,
            )  # fmt: skip
            save_checkpoint(ckpt, weights / "last.pt")
            if out_of_time:
                break
        if limit:  # the clock ran out during the batches, the validation or the saving: all end here
            LOGGER.info("time limit of %g min reached after epoch %d", a["time_limit"], epoch + 1)
        if a["plots"]:
            plot_results(csv_path, self.save_dir / "results.png")
        tb.close()
        return {**metrics, "save_dir": str(self.save_dir), "time": time.monotonic() - t0}
