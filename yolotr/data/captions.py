"""Caption datasets: COCO captions JSON or ``{image path: caption(s)}`` files, and the shapes captions.

A caption dataset YAML is ``{path, train, val, train_images?, val_images?}``: ``train`` and ``val`` name
captions JSON files (relative to ``path``), ``*_images`` the folders their image paths are relative to.
``data="shapes"`` generates the built-in shapes captions once into ``$YOLOTR_CACHE``. Images are resized
(not letterboxed) to ``imgsz x imgsz``; no flips, since captions may say left and right.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset
from tqdm import tqdm

from yolotr.data.images import read_image
from yolotr.errors import DataError, did_you_mean
from yolotr.models.vocab import Vocabulary, tokenize

LOGGER = logging.getLogger("yolotr")


@dataclass
class CaptionSet:
    """Images and their reference captions: ``paths[i]`` has captions ``captions[i]`` (one or more)."""

    paths: list[Path]
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.paths)


def read_caption_json(json_path: str | Path, image_root: str | Path) -> CaptionSet:
    """A COCO captions JSON or a ``{relative image path: caption(s)}`` mapping -> :class:`CaptionSet`.

    A caption without a word (empty, or only punctuation and emoji) is skipped with a warning naming its entry,
    and so is an image left without a caption; an image with none is logged.

    Raises:
        DataError: naming the file and the entry for a JSON of another shape, two images with one id, an
            ``image_id`` the JSON does not list, or no caption with a word at all.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    try:
        obj = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{json_path}: cannot read captions JSON ({e})") from None
    if isinstance(obj, dict) and ("annotations" in obj or "images" in obj):
        grouped = _coco_captions(obj, json_path)
    elif isinstance(obj, dict):
        grouped = {}
        for name, caps in obj.items():
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise DataError(f"{json_path}: key {name!r} must map to a caption or a list of captions")
            grouped[name] = [c for k, c in enumerate(caps) if _has_words(c, json_path, f"{name!r}[{k}]")]
    else:
        raise DataError(f"{json_path}: expected COCO captions ('images' + 'annotations') or an image->caption map")
    without = [k for k, v in grouped.items() if not v]
    if without:
        LOGGER.info("%s: %d image(s) without a caption left out (e.g. %s)", json_path, len(without), without[0])
    grouped = {k: v for k, v in grouped.items() if v}
    if not grouped:
        raise DataError(f"{json_path}: no captions")
    names = sorted(grouped)
    return CaptionSet([image_root / n for n in names], [grouped[n] for n in names])


def _coco_captions(obj: dict, json_path: Path) -> dict[str, list[str]]:
    """``file_name -> captions`` of a COCO captions JSON (see :func:`read_caption_json`)."""
    images, annotations = obj.get("images"), obj.get("annotations")
    for key, value in (("images", images), ("annotations", annotations)):
        if not isinstance(value, list):
            raise DataError(f"{json_path}: COCO captions need a list under '{key}', got {type(value).__name__}")
    files: dict = {}
    first: dict = {}
    for k, im in enumerate(images):
        if (
            not isinstance(im, dict)
            or "id" not in im
            or not isinstance(im.get("file_name"), str)
            or not im["file_name"]
        ):
            raise DataError(f"{json_path}: images[{k}] needs an 'id' and a 'file_name' (a path)")
        if im["id"] in first:
            raise DataError(f"{json_path}: images[{k}]: id {im['id']!r} is also the id of images[{first[im['id']]}]")
        first[im["id"]], files[im["id"]] = k, im["file_name"]
    grouped: dict[str, list[str]] = {name: [] for name in files.values()}
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            raise DataError(f"{json_path}: annotations[{k}] needs a string 'caption'")
        if ann.get("image_id") not in files:
            raise DataError(f"{json_path}: annotations[{k}] refers to unknown image_id {ann.get('image_id')!r}")
        if _has_words(ann["caption"], json_path, f"annotations[{k}]"):
            grouped[files[ann["image_id"]]].append(ann["caption"])
    return grouped


def _has_words(caption: str, json_path: Path, where: str) -> bool:
    """Whether ``caption`` has a word to train on; warned of, naming ``where``, when it has none."""
    if tokenize(caption):
        return True
    LOGGER.warning("%s: %s: caption %r has no word (empty or only punctuation): skipped", json_path, where, caption)
    return False


CAPTION_DATA_KEYS = ("path", "train", "val", "train_images", "val_images")


def load_caption_data(args: dict) -> tuple[CaptionSet, CaptionSet]:
    """Training and validation sets named by ``args["data"]`` (see the module docstring)."""
    data = str(args["data"])
    if data == "shapes":
        from yolotr.data.sources import cache_dir
        from yolotr.data.synthetic import make_shapes_dataset

        n_train, n_val, imgsz, seed = args["n_train"], args["n_val"], args["imgsz"], args["seed"]
        root = cache_dir() / f"shapes-captions-{n_train}-{n_val}-{imgsz}-{seed}"
        make_shapes_dataset(root, n_train, n_val, imgsz, seed)
        full = read_caption_json(root / "captions.json", root)
        split = {"train": ([], []), "val": ([], [])}
        for p, c in zip(full.paths, full.captions):
            split[p.parent.name][0].append(p)
            split[p.parent.name][1].append(c)
        return CaptionSet(*split["train"]), CaptionSet(*split["val"])
    path = Path(data)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{data}: not 'shapes' and not a readable caption dataset YAML ({e})") from None
    if not isinstance(cfg, dict) or "train" not in cfg or "val" not in cfg:
        raise DataError(f"{data}: a caption dataset YAML needs 'train' and 'val' captions JSON files")
    for key in cfg:
        if key not in CAPTION_DATA_KEYS:
            hint = did_you_mean(str(key), CAPTION_DATA_KEYS)
            raise DataError(
                f"{data}: unknown key {key!r}{hint} (a caption dataset YAML has {', '.join(CAPTION_DATA_KEYS)})"
            )
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = path.parent / root
    sets = []
    for split in ("train", "val"):
        images = cfg.get(f"{split}_images")
        sets.append(read_caption_json(root / cfg[split], root / images if images else root))
    return sets[0], sets[1]


def load_image_tensor(path: str | Path, imgsz: int) -> torch.Tensor:
    """An image file -> ``(3, imgsz, imgsz)`` uint8 RGB (area-resized, aspect not kept)."""
    return prepare_image(read_image(path), imgsz)


def prepare_image(image: np.ndarray, imgsz: int) -> torch.Tensor:
    """RGB ``(H, W, 3)`` uint8 -> ``(3, imgsz, imgsz)`` uint8."""
    if image.shape[:2] != (imgsz, imgsz):
        image = cv2.resize(image, (imgsz, imgsz), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


class CaptionDataset(Dataset):
    """Items ``(image (3, S, S) uint8, token ids (L,) int64, index)``; a random reference caption per
    visit when training, the first one otherwise. Images are read once and kept when ``cache``."""

    def __init__(self, data: CaptionSet, vocab: Vocabulary, imgsz: int, max_len: int, train: bool, cache: bool):
        self.data, self.vocab, self.imgsz, self.max_len, self.train = data, vocab, imgsz, max_len, train
        if train:
            lengths = [len(tokenize(c)) for caps in data.captions for c in caps]
            cut = sum(n > max_len - 2 for n in lengths)
            if cut:
                LOGGER.warning(
                    "%d of %d training captions have more than max_len - 2 = %d words (the longest %d): the model "
                    "learns them cut after word %d; raise max_len to keep them whole",
                    cut, len(lengths), max_len - 2, max(lengths), max_len - 2,
                )  # fmt: skip
        self.images: list[torch.Tensor] | None = None
        if cache:
            self.images = [load_image_tensor(p, imgsz) for p in tqdm(data.paths, desc="caching images", leave=False)]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image = self.images[i] if self.images is not None else load_image_tensor(self.data.paths[i], self.imgsz)
        caps = self.data.captions[i]
        text = random.choice(caps) if self.train else caps[0]
        return image, torch.tensor(self.vocab.encode(text, self.max_len)), i


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 in ``[0, 1]`` on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255)


def collate_captions(batch):
    """-> images ``(B, 3, S, S)`` uint8, tokens ``(B, Lmax)`` int64 right-padded with ``<pad>``, indices ``(B,)``."""
    images, tokens, index = zip(*batch)
    padded = torch.nn.utils.rnn.pad_sequence(list(tokens), batch_first=True, padding_value=Vocabulary.PAD)
    return torch.stack(images), padded, torch.tensor(index)
