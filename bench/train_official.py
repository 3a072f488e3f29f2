"""The official YOLOv5 side of ``bench/train.py``: data layout, the child that runs YOLOv5's ``train.py``
(the ``yolov5`` pip package, 7.0.14) and yolotr's validation of its final weights."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

from shared_data import raccoon_data
from train_common import epoch_losses, find_image, gpu_name, read_rows, run_name, split_stems, weights_path
from train_probe import Marks, StepProbe

LOGGER = logging.getLogger("bench.train")


def voc_to_yolo(root: Path, out: Path, names: list[str]) -> Path:
    """Write ``out/{images,labels}`` (image symlinks, YOLO txt) and ``out/data.yaml`` for YOLOv5."""
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    index = {n: i for i, n in enumerate(names)}
    for split in ("train", "val"):
        listed = []
        for stem in split_stems(root, split):
            image = find_image(root, stem)
            link = out / "images" / image.name
            if not link.exists():
                link.symlink_to(image)
            with Image.open(image) as im:
                w, h = im.size
            lines = []
            for obj in ET.parse(root / "annotations" / f"{stem}.xml").getroot().iter("object"):
                box = obj.find("bndbox")
                x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
                x1, y1, x2, y2 = max(x1 - 1, 0.0), max(y1 - 1, 0.0), min(x2, w), min(y2, h)
                if x2 <= x1 or y2 <= y1:
                    continue
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{index[obj.find('name').text.strip()]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
            (out / "labels" / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
            listed.append(str(link))
        (out / f"{split}.txt").write_text("".join(f"{p}\n" for p in listed))
    data = out / "data.yaml"
    data.write_text(
        f"path: {out}\ntrain: {out / 'train.txt'}\nval: {out / 'val.txt'}\n"
        f"names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    )
    return data


def place_font(config_dir: Path) -> None:
    """Give YOLOv5 a local ``Arial.ttf`` (any TrueType font) so ``check_dataset`` downloads nothing."""
    import matplotlib

    config_dir.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (config_dir / name).exists():
            shutil.copy(font, config_dir / name)


def official_yaml(name: str) -> str:
    """Path of a model YAML shipped in the ``yolov5`` package (located without importing it)."""
    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the yolov5 package is not installed: pip install -e .[bench]")
    return str(Path(next(iter(spec.submodule_search_locations))) / "models" / name)


def stand_in_for_roboflow() -> bool:
    """Where the ``roboflow`` package is missing (the GPU machine: ``gpu-pack`` carries only the reference
    packages), register an empty stand-in so that ``yolov5.train`` imports: its ``yolov5.utils.roboflow``
    imports ``Roboflow`` and ``Version`` at module level for dataset uploads, which the bench never does.
    Using the stand-in raises. Returns whether it was needed."""
    try:
        import roboflow.core.version  # noqa: F401 - present and importable: nothing to do
    except ImportError:
        pass
    else:
        return False

    class _Absent:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("roboflow is not installed (the bench registered a stand-in to import yolov5.train)")

    modules = {name: types.ModuleType(name) for name in ("roboflow", "roboflow.core", "roboflow.core.version")}
    modules["roboflow"].Roboflow = _Absent
    modules["roboflow"].core = modules["roboflow.core"]
    modules["roboflow.core"].version = modules["roboflow.core.version"]
    modules["roboflow.core.version"].Version = _Absent
    sys.modules.update(modules)
    return True


def child_official(args: argparse.Namespace, workdir: Path) -> dict:
    import numpy as np
    import torch

    if not hasattr(np, "trapz"):  # removed in numpy 2.4; YOLOv5 7.0's compute_ap integrates with it
        np.trapz = np.trapezoid
    sys.argv = sys.argv[:1]  # parse_opt reads the command line: give it only the defaults
    stand_in_for_roboflow()
    from yolov5 import train as v5train
    from yolov5.utils import downloads
    from yolov5.utils.callbacks import Callbacks

    torch.set_num_threads(args.threads)  # yolov5.utils.general sets OMP_NUM_THREADS to cpu_count - 1
    # a local .pt: no Hugging Face Hub lookup (it would need huggingface_hub and the network)
    v5train.attempt_download_from_hub = downloads.attempt_download_from_hub = lambda *a, **k: None
    marks = Marks(args.device)
    from yolov5.utils.torch_utils import ModelEMA

    StepProbe(marks, args.profile_epochs, args.device, (ModelEMA,)).install()
    # AMP as the bench sets it (fp16 + GradScaler on CUDA, off on the CPU): its check_amp would try
    # to download yolov5n.pt and the bus image
    v5train.check_amp = lambda _model: args.device == "cuda"
    # noval: the pip package's train() reads `map50s` after every epoch but sets it only when it
    # validates, so noval=True crashes after epoch 1. Instead run with noval=False and answer the
    # epoch-end validations before the last with what noval leaves there (zeros): the same run.
    validate_run = v5train.validate.run

    def validate_last_epoch_only(*a, **k):
        if len(marks.ends) < args.epochs:
            nc = len(k["model"].names) if "model" in k else 1
            return (0.0,) * 7, np.zeros(nc), np.zeros(nc), None
        return validate_run(*a, **k)

    v5train.validate.run = validate_last_epoch_only

    def count(_model, _ni, imgs, *_rest):
        marks.images += int(imgs.shape[0])

    callbacks = Callbacks()
    callbacks.register_action("on_train_batch_start", callback=marks.batch_start)
    callbacks.register_action("on_train_batch_end", callback=count)
    callbacks.register_action("on_train_epoch_end", callback=marks.epoch_end)
    opt = v5train.parse_opt(True)
    for key, value in dict(
        weights="" if args.scratch else str(weights_path()),
        cfg=official_yaml("yolov5n.yaml") if args.scratch else "",
        data=str(workdir / "raccoon-yolo" / "data.yaml"),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch_size=args.batch,
        workers=args.workers,
        device="0" if args.device == "cuda" else "cpu",
        seed=args.seed,
        optimizer="SGD",
        cos_lr=False,
        noval=False,  # see validate_last_epoch_only
        noplots=True,
        project=str(workdir),
        name=run_name("official", args),
        exist_ok=True,
    ).items():
        setattr(opt, key, value)
    v5train.main(opt, callbacks=callbacks)
    rows = read_rows(Path(opt.save_dir) / "results.csv")
    row = rows[-1]
    # the final EMA weights as YAML + plain tensors, for yolotr's validator (its unpickler only takes
    # the GitHub repo's module paths, not the pip package's yolov5.models.*)
    final = torch.load(Path(opt.save_dir) / "weights" / "last.pt", map_location="cpu", weights_only=False)
    model = final.get("ema") or final["model"]
    plain = {"yaml": dict(model.yaml), "state_dict": {k: v.float() for k, v in model.state_dict().items()}}
    final_weights = workdir / f"{run_name('official', args)}-final.pt"
    torch.save(plain, final_weights)
    return {
        **marks.summary(),
        "threads": torch.get_num_threads(),
        "gpu_name": gpu_name(args),
        "losses": epoch_losses(rows),
        "train_images": marks.images // max(len(marks.ends), 1),
        "map50": float(row["metrics/mAP_0.5"]),
        "map50_95": float(row["metrics/mAP_0.5:0.95"]),
        "save_dir": str(opt.save_dir),
        "final_weights": str(final_weights),
    }


def yolotr_validate_official(path: str, args: argparse.Namespace) -> tuple[float, float]:
    """mAP50 and mAP50-95 of the official run's final EMA weights, by yolotr's validator."""
    import torch

    from yolotr.engine.validator import validate
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import load_exact

    torch.set_num_threads(args.threads)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = DetectionModel(saved["yaml"])
    load_exact(model, saved["state_dict"], path)
    model.names = ["raccoon"]
    model = model.float().eval()
    result = validate(
        model, raccoon_data(), "val", imgsz=args.imgsz, batch_size=args.batch, workers=args.workers, verbose=False
    )
    return result.map50, result.map50_95


def check_hyp_mirror() -> None:
    """Warn where yolotr's defaults differ from the official hyp.scratch-low.yaml."""
    import yaml

    from yolotr.engine.config import default_config

    spec = importlib.util.find_spec("yolov5")  # located, not imported: its import is slow and noisy
    if spec is None or not spec.submodule_search_locations:
        return
    hyp_file = Path(next(iter(spec.submodule_search_locations))) / "data" / "hyps" / "hyp.scratch-low.yaml"
    hyp = yaml.safe_load(hyp_file.read_text())
    ours = default_config()
    unused = {"iou_t"}  # in the hyp file, read by nothing in YOLOv5 7.0's training
    differ = {k: (ours[k], v) for k, v in hyp.items() if k in ours and ours[k] != v}
    missing = sorted(k for k, v in hyp.items() if k not in ours and k not in unused and v)
    if differ or missing:
        LOGGER.warning("yolotr defaults (ours, official) differ: %s; not in yolotr: %s", differ, missing)
