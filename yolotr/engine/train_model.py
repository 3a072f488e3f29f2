"""The model a training run starts from: built from a YAML, given, loaded from a checkpoint or resumed, with its
class count checked against the data, pretrained weights transferred (``weights``, ``weights_rename``) and its
first layers frozen (``freeze``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from yolotr.errors import CheckpointError, ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import checkpoint_state_dict, load_model
from yolotr.models.weights import LoadReport, match_class_width, transfer_weights


def parse_rename_rules(rules) -> list[tuple[str, str]]:
    """``["backbone.stages.=model.", ...]`` -> ``[("backbone.stages.", "model."), ...]``."""
    out = []
    for rule in rules or []:
        if "=" not in rule:
            raise ConfigError(f"weights_rename: rule {rule!r} must look like old=new")
        old, new = rule.split("=", 1)
        out.append((old, new))
    return out


def build_train_model(
    cfg: dict, names: list[str], data_source: str, model_in: DetectionModel | dict | None, resume: dict | None
) -> tuple[DetectionModel, LoadReport | None]:
    """The model to train and the report of the ``weights`` transferred into it (None without ``weights``).

    Args:
        cfg: the run's resolved settings (``model``, ``weights``, ``weights_rename``, ``freeze``).
        names: the dataset's class names; the model gets them, and must have as many classes.
        data_source: the dataset YAML, for messages.
        model_in: a built model to train, or a model YAML dict built here (after the run's seed is set).
        resume: the resume state (:func:`~yolotr.engine.resume_state.resume_state`): the model is rebuilt from the
            checkpoint's YAML at its class-branch width, and its weights come later with the optimizer's.

    Raises:
        ConfigError: the class count differs from the data's, a rename rule is malformed, or ``freeze`` covers
            every layer.
        CheckpointError: no tensor of ``weights`` fits the model.
    """
    nc = len(names)
    loaded_report = None
    if resume is not None:
        model = DetectionModel(resume["checkpoint"]["model_yaml"])
        match_class_width(model, resume["model"])  # a head widened by its weight transfer
        trained = [str(n) for n in resume["checkpoint"].get("names") or []]
        if trained and trained != [str(n) for n in names]:
            raise ConfigError(
                f"resume: {data_source} names the classes {names}, the run was trained on {trained}; a resume may "
                "move the dataset, not change its classes (start a new run from the weights with --weights)"
            )
    elif isinstance(model_in, dict):
        model = DetectionModel(model_in, nc=nc)
    elif model_in is not None:
        model = model_in
    elif str(cfg["model"]).endswith((".yaml", ".yml")) or not Path(str(cfg["model"])).is_file():
        model = DetectionModel(cfg["model"], nc=nc)
    else:
        loaded = load_model(cfg["model"])
        model = DetectionModel(loaded.yaml, nc=nc)
        transfer_weights(model, loaded.state_dict())
    if model.nc != nc:
        raise ConfigError(f"the model has {model.nc} class{'es' * (model.nc != 1)} but {data_source} has {nc}")
    model.names = names
    if cfg["weights"] and resume is None:
        loaded_report = transfer_weights(
            model, checkpoint_state_dict(cfg["weights"]), parse_rename_rules(cfg["weights_rename"])
        )
        if not loaded_report.loaded:
            raise CheckpointError(
                f"weights {cfg['weights']}: no tensor fits the model by name and shape ({loaded_report.summary(3)}); "
                "weights_rename old=new maps key prefixes"
            )
    if int(cfg["freeze"]) >= len(model.model):
        raise ConfigError(
            f"freeze {cfg['freeze']}: the model has {len(model.model)} layers (0..{len(model.model) - 1}); "
            "freezing all of them leaves nothing to train"
        )
    for i, layer in enumerate(model.model):
        if i < int(cfg["freeze"]):
            for p in layer.parameters():
                p.requires_grad_(False)
    return model, loaded_report


def freeze_batchnorm_statistics(model: DetectionModel, freeze: int) -> None:
    """Put the BatchNorms of the first ``freeze`` layers in eval mode (after ``model.train()``), so their running
    statistics stay those of the weights they were frozen with, as the package does for its models (the
    ``fitness_rule`` "ultralytics" families). YOLOv5 keeps updating them, and so do its models here."""
    if not freeze or getattr(model, "fitness_rule", "yolov5") != "ultralytics":
        return
    for layer in list(model.model)[:freeze]:
        for m in layer.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
