"""Where ``yolotr explain`` writes its overlay, checked before any work: never over the image it reads, never
over an existing file unless told, and the path it reports is the file it writes."""

from __future__ import annotations

import os
from pathlib import Path

from yolotr.engine.runs import check_output_dir, next_run_dir
from yolotr.errors import ConfigError

FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pdf", ".svg", ".webp", ".tif", ".tiff"}  # what matplotlib writes


def overlay_path(
    save_path: str | Path | None,
    image_path: str | Path,
    layer: int,
    project: str | Path,
    name: str,
    exist_ok: bool = False,
) -> Path:
    """The file the overlay of ``layer`` on ``image_path`` goes to.

    ``save_path`` None: ``<image stem>_layer<layer>.png`` in a new ``project/name`` run folder. A folder (existing,
    or written with a trailing ``/``): that name inside it. A name without a figure suffix gets ``.png``, as
    matplotlib would add it.

    Raises:
        ConfigError: the path is the source image, an existing file (without ``exist_ok``) or a folder, or its
            folder cannot be made.
    """
    default = f"{Path(image_path).stem}_layer{layer}.png"
    if save_path is None:
        return next_run_dir(project, name) / default
    text = str(save_path)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        path = path / default
    elif path.suffix.lower() not in FIGURE_SUFFIXES:
        path = path.with_name(path.name + ".png")
    if path.exists() and Path(image_path).exists() and os.path.samefile(path, image_path):
        raise ConfigError(f"--out {save_path}: that is the image being explained; it would be overwritten")
    if path.is_dir():
        raise ConfigError(f"--out {save_path}: {path} is a folder")
    if path.exists() and not exist_ok:
        raise ConfigError(f"--out {save_path}: {path} exists; give another --out, or --exist-ok to replace it")
    check_output_dir(path.parent)
    return path
