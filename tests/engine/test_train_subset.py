"""``fraction``, ``classes`` and ``mixup`` in a training run: the training set is the first images by path, the
objects of the classes asked (in training and in the validations during training, as the package), the model keeps
every class; with ``single_cls`` the objects kept become class 0."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.engine.conftest import assert_same_weights, resumed_and_straight, tiny_train_cfg
from yolotr.cli import build_parser
from yolotr.data.sources import load_records
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _classes(records) -> np.ndarray:
    return np.concatenate([r.classes for r in records])


def test_a_run_trains_on_the_fraction_and_classes_asked(tiny_shapes, tmp_path):
    train, _ = load_records(tiny_shapes, "train", log=False)
    val, _ = load_records(tiny_shapes, "val", log=False)
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, val=True, fraction=0.5, classes=[0, 2], mixup=0.5)
    trainer = Trainer(cfg)
    trainer.train()
    first = sorted(r.path for r in train)[: round(len(train) * 0.5)]
    assert sorted(r.path for r in trainer.train_set.records) == first
    assert set(_classes(trainer.train_set.records).tolist()) <= {0, 2}
    kept = [r for r in train if r.path in first]
    assert len(_classes(trainer.train_set.records)) == np.isin(_classes(kept), [0, 2]).sum() > 0
    validation = trainer.val_loader.dataset.records
    assert len(validation) == len(val)  # every validation image, only the objects of the classes
    assert len(_classes(validation)) == np.isin(_classes(val), [0, 2]).sum() < len(_classes(val))
    assert trainer.model.nc == 3 and trainer.names == ["circle", "square", "triangle"]
    settings = yaml.safe_load((trainer.save_dir / "args.yaml").read_text())
    assert (settings["fraction"], settings["classes"], settings["mixup"]) == (0.5, [0, 2], 0.5)
    resumed = Trainer.resume(trainer.save_dir, epochs=2)  # the run's settings, these with them
    assert (resumed.cfg["fraction"], resumed.cfg["classes"], resumed.cfg["mixup"]) == (0.5, [0, 2], 0.5)


def test_classes_then_single_cls(tiny_shapes, tmp_path):
    train, _ = load_records(tiny_shapes, "train", log=False)
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, classes=[1], single_cls=True))
    trainer._setup()
    got = _classes(trainer.train_set.records)
    assert len(got) == (_classes(train) == 1).sum() > 0 and not got.any() and trainer.names == ["item"]


def test_a_class_id_past_the_names_is_refused_at_the_key(tiny_shapes, tmp_path):
    with pytest.raises(ConfigError, match="'classes' has class id 3, but the dataset has 3 classes"):
        Trainer(tiny_train_cfg(tiny_shapes, tmp_path, classes=[0, 3])).train()


def test_a_class_id_past_the_names_in_a_cfg_file_names_the_file(tiny_shapes, tmp_path, capsys):
    """``yolotr train --cfg hyp.yaml`` with ``classes: [0, 3]`` in the file: the error names the file (it said
    ``arguments``); ``--classes`` given too replaces the file's, and its error names the arguments."""
    from yolotr.cli import main

    cfg_file = tmp_path / "hyp.yaml"
    cfg_file.write_text("classes: [0, 3]\n")
    args = ["train", "--model", "yolov5n.yaml", "--data", str(tiny_shapes), "--imgsz", "64", "--epochs", "1"]
    assert main([*args, "--cfg", str(cfg_file), "--project", str(tmp_path)]) != 0
    assert capsys.readouterr().err.startswith(f"error: {cfg_file}: setting 'classes' has class id 3,")
    assert main([*args, "--cfg", str(cfg_file), "--classes", "4", "--project", str(tmp_path)]) != 0
    assert capsys.readouterr().err.startswith("error: arguments: setting 'classes' has class id 4,")


def test_the_train_flag_and_key_values():
    """``--classes`` as predict's; fraction has no flag of its own (``--patiense`` would suggest it over
    ``--set patience``): ``fraction=0.25`` and ``--set fraction=0.25``, as the other settings."""
    from yolotr.cli_args import expand_key_values, set_overrides

    parser = build_parser()
    args = parser.parse_args(expand_key_values(parser, ["train", "classes=[0,2]", "fraction=0.25"]))
    assert args.classes == [0, 2] and set_overrides(args.set) == {"fraction": 0.25}
    assert parser.parse_args(["train", "--classes", "1"]).classes == [1]


def test_a_run_with_mixup_resumes_to_the_same_weights(tiny_shapes, tmp_path):
    """Each item's mixup draws come from its ``(seed, epoch, index)`` generator, its partner from the whole set:
    a run stopped in its second epoch and resumed ends with the weights of one that was not stopped."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, save_period_steps=1, mosaic=1.0, mixup=0.5, workers=1)
    assert_same_weights(*resumed_and_straight(cfg, at_step=5))


def test_train_reads_a_settings_file_given_as_cfg(tiny_shapes, tmp_path):
    """``train(cfg="hyp.yaml")``, the package's spelling (it was an unknown setting): the file's settings under the
    keywords, and a class id past the names refused naming the file."""
    from yolotr import YOLO

    cfg_file = tmp_path / "hyp.yaml"
    cfg_file.write_text("classes: [0, 3]\n")
    run = dict(data=str(tiny_shapes), imgsz=64, batch=4, val=False, project=str(tmp_path), verbose=False)
    with pytest.raises(ConfigError, match=f"^{cfg_file}: setting 'classes' has class id 3"):
        YOLO("yolov5n.yaml").train(cfg=str(cfg_file), epochs=1, **run)
    cfg_file.write_text("fraction: 0.5\nmixup: 0.3\nepochs: 5\n")
    YOLO("yolov5n.yaml").train(cfg=str(cfg_file), epochs=1, name="hyp", **run)
    settings = yaml.safe_load((tmp_path / "hyp" / "args.yaml").read_text())
    assert (settings["fraction"], settings["mixup"], settings["epochs"]) == (0.5, 0.3, 1)
