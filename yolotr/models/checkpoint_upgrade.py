"""What a yolotr checkpoint of an earlier format needs to build the model it was trained as.

Format 1 (before 2026-12-08) built an SPPF row that names its pool count without a shortcut (YOLO26-P6's
``[1024, 5, 3, False]``) with ``cv1`` activated; format 2 builds it as the ``ultralytics`` package does, without
that activation. A format-1 checkpoint's model YAML is rewritten so that its weights run as they trained: such a
row with 3 pools becomes ``[c2, k]`` (the same layer with ``cv1`` activated), and is then saved that way.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("yolotr")


def upgrade_model_yaml(cfg: dict, format_version: int, source: str) -> dict:
    """``cfg`` (a checkpoint's ``model_yaml``) as format 2 builds the model that format ``format_version``
    trained; changed in place and returned. ``source`` names the checkpoint in the log."""
    if format_version >= 2:
        return cfg
    kept = []
    for i, row in enumerate([*(cfg.get("backbone") or []), *(cfg.get("head") or [])]):
        if not (isinstance(row, list) and len(row) == 4 and row[2] == "SPPF" and isinstance(row[3], list)):
            continue
        args = row[3]
        if len(args) < 3 or (len(args) > 3 and args[3]):
            continue  # [c2, k] kept its activation, a shortcut row had none: both build as they did
        if args[2] == 3:
            row[3] = args[:2]
            kept.append(i)
        else:
            LOGGER.warning(
                "%s: layer %d %r was built with cv1 activated (yolotr before 2026-12-08); it now builds without, "
                "as the ultralytics package: its predictions differ until it is trained again",
                source, i, row,
            )  # fmt: skip
    if kept:
        LOGGER.info(
            "%s: SPPF layer(s) %s keep cv1's activation as they were trained (written as [c2, k]; the package's "
            "YOLO26-P6 SPPF has none)",
            source, ", ".join(map(str, kept)),
        )  # fmt: skip
    return cfg
