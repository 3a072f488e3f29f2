"""Settings that would do nothing, or fail deep inside torch after minutes of work, refused up front with the
setting named: a freeze of every layer, a weight transfer that fits nothing, a rename rule that matches no
key, an output folder under a file, and predict's qualifiers without the option they qualify."""

from __future__ import annotations

import pytest

from tests.engine.conftest import tiny_train_cfg
from yolotr import YOLO
from yolotr.cli import main
from yolotr.engine.trainer import Trainer
from yolotr.errors import CheckpointError, ConfigError, YolotrError
from yolotr.models.detection import DetectionModel
from yolotr.models.weights import model_checkpoint, save_checkpoint


def test_freezing_every_layer_is_refused(tiny_shapes, tmp_path):
    with pytest.raises(ConfigError, match=r"freeze 25: the model has 25 layers \(0..24\); freezing all"):
        Trainer(tiny_train_cfg(tiny_shapes, tmp_path, freeze=25)).train()


def test_weights_that_fit_nothing_and_rename_rules_that_match_nothing(tiny_shapes, tmp_path):
    donor = save_checkpoint(model_checkpoint(DetectionModel("yolov5n.yaml", nc=3)), tmp_path / "donor.pt")
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, weights=str(donor), epochs=1)
    with pytest.raises(CheckpointError, match=r"donor.pt: no tensor fits the model by name and shape \(loaded 0"):
        Trainer({**cfg, "weights_rename": ["model.=elsewhere."]}).train()
    with pytest.raises(ConfigError, match=r"weights_rename: nothing.=model. matches no checkpoint key"):
        Trainer({**cfg, "weights_rename": ["nothing.=model."]}).train()


def test_an_output_folder_under_a_file_is_one_clear_error(tiny_shapes, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"afile/run: cannot make this output folder: .*afile is a file"):
        Trainer(tiny_train_cfg(tiny_shapes, blocker))
    image = next((tiny_shapes.parent / "images" / "val").iterdir())
    args = ["predict", "--model", "yolov5n.yaml", "--source", str(image), "--imgsz", "64", "--save"]
    assert main([*args, "--project", str(blocker)]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err
    assert main(["val", "--model", "yolov5n.yaml", "--data", str(tiny_shapes), "--save-dir", str(blocker / "v")]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err


def test_predict_qualifiers_without_their_option_are_refused(tiny_shapes, capsys):
    image = next((tiny_shapes.parent / "images" / "val").iterdir())
    args = ["predict", "--model", "yolov5n.yaml", "--source", str(image), "--imgsz", "64"]
    assert main([*args, "--save-conf"]) == 2
    assert "save_conf adds the score column to save_txt's label files" in capsys.readouterr().err
    assert main([*args, "--data", str(tiny_shapes)]) == 2
    assert "data gives save_json's COCO results the dataset's ids" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give save_txt too"):
        YOLO("yolov5n.yaml").predict(str(image), imgsz=64, save_conf=True)


def test_resuming_a_file_that_is_not_a_training_checkpoint_says_what_it_is(tmp_path):
    import shutil

    from tests.conftest import shared_path

    last = tmp_path / "run" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last.pt: not a checkpoint: it looks like an empty file"):
        Trainer.resume(tmp_path / "run")
    shutil.copy(shared_path("weights", "yolov5n.pt"), last)
    with pytest.raises(CheckpointError, match=r"not a resumable training checkpoint \(a yolov5 file.*--weights"):
        Trainer.resume(tmp_path / "run")


def test_train_with_data_none_is_data_not_given(monkeypatch):
    """``train(data=None)`` means no dataset given (as ``val(data=None)``): the built-in set, not a TypeError."""
    import yolotr.engine.trainer as trainer_module

    calls = []

    def record(overrides, model=None, cfg_file=None):
        calls.append(overrides)
        raise RuntimeError("stop")

    monkeypatch.setattr(trainer_module, "Trainer", record)
    with pytest.raises(RuntimeError, match="stop"):
        YOLO("yolov5n.yaml").train(data=None, imgsz=None, epochs=1)
    assert "data" not in calls[0] and "imgsz" not in calls[0] and calls[0]["epochs"] == 1


def test_unknown_keywords_of_predict_val_export_name_the_setting():
    """A keyword the method does not take is a ConfigError naming it and the nearest settings (the package's
    ``nms`` with its yolotr spelling), not Python's bare ``TypeError`` about an unexpected argument."""
    model = YOLO("yolov5n.yaml", nc=3, verbose=False)
    with pytest.raises(ConfigError, match=r"predict: unknown setting 'nms'; the ultralytics package's nms=False"):
        model.predict("x.jpg", nms=False)
    with pytest.raises(ConfigError, match=r"predict: unknown setting 'max_dets'; did you mean max_det\?"):
        model("x.jpg", max_dets=3)
    with pytest.raises(ConfigError, match=r"val: unknown setting 'save_jsn'; did you mean save_json"):
        model.val(data="shapes", save_jsn=True)
    with pytest.raises(ConfigError, match=r"export: unknown setting 'dynamc'; did you mean dynamic"):
        model.export("onnx", dynamc=True)
    # the package's keywords yolotr lacks say what it has instead ("did you mean names?" for val's name=, which
    # renames the classes, and "did you mean rect?" for augment misled)
    with pytest.raises(
        ConfigError, match=r"val: unknown setting 'name'; val writes its plots and COCO JSON into save_dir"
    ):
        model.val(data="shapes", name="v")
    with pytest.raises(ConfigError, match=r"val: unknown setting 'classes'; val scores every class of the set"):
        model.val(data="shapes", classes=[0])  # train takes classes=, and predict (its detections)
    with pytest.raises(ConfigError, match=r"predict: unknown setting 'augment'; yolotr has no test-time augmentation"):
        model.predict("x.jpg", augment=True)
    with pytest.raises(ConfigError, match=r"predict: unknown setting 'line_width'; give it to Results.plot"):
        model.predict("x.jpg", line_width=2)


@pytest.mark.parametrize(
    ("method", "keyword", "message"),
    [
        ("predict", "embed", "yolotr returns no embeddings: a forward hook on model.model"),
        ("predict", "retina_masks", "a segmentation setting of the package"),
        ("predict", "dnn", r"OpenCV DNN runs an exported ONNX file: yolotr export, then cv2\.dnn\.readNetFromONNX"),
        ("predict", "compile", "prediction runs the fused model, .*backend='cuda-graph' captures CUDA graphs"),
        ("predict", "stream_buffer", "yolotr reads files, not live streams"),
        ("export", "int8", "exports are float32: onnxruntime.quantization quantizes the ONNX file"),
        ("export", "data", "calibration data of the package's int8 exports"),
    ],
)
def test_the_packages_other_keywords_say_what_yolotr_has_instead(method, keyword, message):
    """These were refused as unknown with no word ('dnn', 'int8') or a misleading one ('stream_buffer': "did you
    mean stream?")."""
    model = YOLO("yolov5n.yaml", nc=3, verbose=False)
    call = model.predict if method == "predict" else model.export
    with pytest.raises(ConfigError, match=rf"{method}: unknown setting '{keyword}'; {message}"):
        call("x.jpg" if method == "predict" else "onnx", **{keyword: True})


@pytest.mark.parametrize(
    ("fmt", "message"),
    [("engine", r"trtexec --onnx=model\.onnx"), ("openvino", "openvino.convert_model"), ("tflite", "onnx2tf")],
)
def test_a_format_of_the_package_says_how_to_make_it_from_the_onnx_file(fmt, message):
    with pytest.raises(YolotrError, match=rf"unknown export format '{fmt}'; choose one of .*{message}"):
        YOLO("yolov5n.yaml", nc=3, verbose=False).export(fmt)
