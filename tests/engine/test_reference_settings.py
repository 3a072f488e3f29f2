"""Training settings as YOLOv5's and the package's users write them: ``save_period`` (epoch files), checkpoints
every N optimizer steps (not batches), early stopping through a zero-fitness start, ``deterministic`` off again
and the caller's torch settings kept, and the ranges of values that were accepted and broke later."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.cli import build_parser
from yolotr.engine.config import resolve_config
from yolotr.engine.early_stop import EarlyStopping
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError


def test_checkpoints_follow_optimizer_steps_and_epoch_files(tiny_shapes, tmp_path, monkeypatch):
    """8 batches a run of 2 epochs (4 each), ``nbs`` 8 over batches of 4: an optimizer step every 2nd batch and
    at each epoch's end. ``save_period_steps: 1`` saves after each step inside an epoch (the batch count, read
    as steps x accumulate, missed them in the second epoch); ``save_period: 1`` keeps epoch0.pt and epoch1.pt."""
    saved: list[tuple[int, int]] = []
    original = Trainer._save

    def record(self, epoch, batch, fitness=None, best=False):
        saved.append((epoch, batch))
        return original(self, epoch, batch, fitness, best)

    monkeypatch.setattr(Trainer, "_save", record)
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, nbs=8, warmup_epochs=0, save_period_steps=1, save_period=1)
    Trainer(cfg).train()
    assert saved == [(0, 2), (1, 0), (1, 2), (2, 0)]
    weights = tmp_path / "run" / "weights"
    assert sorted(p.name for p in weights.glob("epoch*.pt")) == ["epoch0.pt", "epoch1.pt"]
    first = torch.load(weights / "epoch0.pt", weights_only=True)
    assert first["train_state"]["epoch"] == 1 and first["train_state"]["optimizer_steps"] == 2


def test_save_period_counts_epochs_from_zero(tiny_shapes, tmp_path):
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, save_period=2)).train()
    assert sorted(p.name for p in (tmp_path / "run" / "weights").glob("epoch*.pt")) == ["epoch0.pt", "epoch2.pt"]


@pytest.mark.parametrize(("value", "read"), [(-1, 0), ("-1", 0), (-5, 0), (0, 0), ("3", 3), (2.0, 2)])
def test_the_references_save_period_off_is_read_as_none(value, read):
    """-1 is YOLOv5's and the package's default ("disabled if < 1"), which their args.yaml and flags carry: it was
    refused ("must be >= 0"). A fraction or a word still is."""
    assert resolve_config({"save_period": value})["save_period"] == read
    for wrong in (2.5, "often", True):
        with pytest.raises(ConfigError, match="'save_period'"):
            resolve_config({"save_period": wrong})


def test_early_stopping_waits_through_a_zero_fitness_start():
    """As the package's rule: a best of 0 (nothing detected yet) makes no epoch a miss."""
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(e, f) for e, f in enumerate([0.0, 0.0, 0.0, 0.0, 0.2, 0.1, 0.1], 1)] == [
        False, False, False, False, False, False, True,
    ]  # fmt: skip
    assert stopper.best_epoch == 5


@pytest.mark.parametrize("callers", [False, True])
def test_deterministic_off_after_on_and_the_callers_settings_back(tiny_shapes, tmp_path, callers):
    original = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(callers, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    seen = []
    try:
        for flag in (True, False):
            cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, name=f"d{flag}{callers}", deterministic=flag)
            trainer = Trainer(cfg)
            trainer.add_callback("on_batch_start", lambda t: seen.append(torch.are_deterministic_algorithms_enabled()))
            trainer.train()
            assert torch.are_deterministic_algorithms_enabled() is callers
            assert torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(original[0], warn_only=original[1])
        torch.utils.deterministic.fill_uninitialized_memory = original[2]
    assert seen == [True] * 4 + [False] * 4


@pytest.mark.parametrize(
    ("key", "value"),
    [("degrees", float("nan")), ("degrees", 200), ("shear", 90), ("perspective", 0.5), ("lr0", float("inf")),
     ("cls_pw", 0.0), ("obj_pw", 0), ("epochs", float("inf"))],
)  # fmt: skip
def test_values_that_broke_training_later_are_refused_at_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        resolve_config({key: value})


def test_every_unknown_key_of_a_reference_file_is_listed_at_once(tmp_path):
    hyp = tmp_path / "hyp.scratch-low.yaml"
    hyp.write_text("lr0: 0.01\niou_t: 0.2\nmixup: 0.1\ncopy_paste: 0.1\nerasing: 0.4\nfliplr: 0.5\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(cfg_file=hyp)
    message = str(info.value)
    assert "2 unknown settings" in message
    assert "\n  mixup" not in message and "\n  copy_paste;" not in message  # YOLOv5's mixup and copy_paste are here
    assert all(f"\n  {key};" in message for key in ("iou_t", "erasing"))
    hyp.write_text("lr0: 0.01\nmixup: 0.1\ncopy_paste: 0.1\nfliplr: 0.5\n")
    assert (resolve_config(cfg_file=hyp)["mixup"], resolve_config(cfg_file=hyp)["copy_paste"]) == (0.1, 0.1)


def test_every_key_of_the_packages_defaults_we_refuse_says_why(tmp_path):
    """The package's default.yaml (an args.yaml of its holds every key) given as --cfg: each key yolotr does not
    take has a hint, none a misleading "did you mean" (``save_txt`` read "did you mean save_period?"), and
    its ``cls_pw: 0.0`` (another meaning) says so."""
    ultralytics = pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra")
    import yaml

    package = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "default.yaml").read_text())
    with pytest.raises(ConfigError, match=r"cls_pw' must be > 0, got 0\.0 \(YOLOv5's weight of the positive class"):
        resolve_config({"cls_pw": package["cls_pw"]})
    args = tmp_path / "args.yaml"
    args.write_text(yaml.safe_dump({k: v for k, v in package.items() if k != "cls_pw"}))
    with pytest.raises(ConfigError) as info:
        resolve_config(cfg_file=args)
    listed = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert len(listed) > 40 and all(";" in line for line in listed), [line for line in listed if ";" not in line]
    misleading = [line for line in listed if "did you mean" in line and line.split(";")[0] in ("save_txt", "split")]
    assert misleading == []
    assert any(line.startswith("task; yolotr trains detectors only") for line in listed)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--save-per", "5"], "--save-per; did you mean --save-period"),  # a prefix is no longer a flag
        (["--cos-lr"], "--cos-lr: a setting; write --set cos_lr=VALUE"),
        (["--save_period", "5"], "--save_period; did you mean --save-period?"),
    ],
)
def test_flags_are_taken_only_as_written(argv, expected, capsys):
    from yolotr.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--model", "yolov8n.yaml", *argv])
    assert expected in capsys.readouterr().err


def test_yolov5s_save_period_flag_is_epochs():
    args = build_parser().parse_args(["train", "--model", "m.yaml", "--save-period", "5"])
    assert args.save_period == 5 and args.save_period_steps is None


@pytest.mark.parametrize(
    ("word", "hint"), [("time", "time_limit=MINUTES"), ("rect", "square mosaics"), ("cache", "cache_ram=true")]
)
def test_refused_package_settings_say_what_to_do(word, hint):
    with pytest.raises(ConfigError, match=hint):
        resolve_config({word: 1})


def test_adamw_betas_are_left_as_built_during_warmup():
    """YOLOv5 and the package warm only a group's ``momentum``; AdamW's betas stay ``(momentum, 0.999)``."""
    from yolotr.engine.optim import apply_schedule

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001, betas=(0.937, 0.999))
    cfg = resolve_config({"optimizer": "AdamW"})
    apply_schedule(optimizer, cfg, epoch=0, iteration=3, warmup_iters=100)
    assert optimizer.param_groups[0]["betas"] == (0.937, 0.999) and optimizer.param_groups[0]["lr"] > 0


@pytest.mark.parametrize(("model", "frozen_stats_move"), [("yolov8n.yaml", False), ("yolov5n.yaml", True)])
def test_frozen_layers_keep_their_batchnorm_statistics_as_the_models_reference(
    tiny_shapes, tmp_path, model, frozen_stats_move
):
    """The package keeps a frozen layer's BatchNorm statistics; YOLOv5 updates them."""
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, model=model, epochs=1, freeze=2, name=model))
    trainer.train()
    state = torch.load(tmp_path / model / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    stats = state["model.0.bn.running_mean"]
    assert bool((stats != 0).any()) is frozen_stats_move  # built at 0; moved only by updated statistics


def test_a_folder_name_given_with_set_is_the_text_typed():
    from yolotr.cli_args import set_overrides

    assert set_overrides(["name=010", "project=1e3", "batch=16"]) == {"name": "010", "project": "1e3", "batch": 16}
    assert set_overrides(["weights=null", "data=shapes"]) == {"weights": None, "data": "shapes"}
