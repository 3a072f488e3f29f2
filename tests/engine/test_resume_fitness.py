"""A run begun when every model's best was scored 0.1 mAP50 + 0.9 mAP50-95 and resumed after fitness followed
the model's reference: its best and patience are scored again by the model's rule from results.csv."""

from __future__ import annotations

from yolotr.engine.resume_state import _rescore_best

CSV = (
    "epoch,train/box_loss,metrics/precision,metrics/recall,metrics/mAP50,metrics/mAP50-95,lr\n"
    "1,1.0,0.5,0.5,0.60,0.40,0.01\n"
    "2,0.9,0.5,0.5,0.50,0.41,0.01\n"
    "3,0.8,nan,nan,nan,nan,0.01\n"
)


def test_an_older_anchor_free_run_is_scored_again(tmp_path):
    (tmp_path / "results.csv").write_text(CSV)
    state = {"best_fitness": 0.42, "early_stop": {"best_fitness": 0.42, "best_epoch": 1}}
    _rescore_best(state, {"state_dict": {"model.22.cv2.0.0.conv.weight": None}}, tmp_path / "results.csv")
    assert state["best_fitness"] == 0.41 and state["early_stop"] == {"best_fitness": 0.41, "best_epoch": 2}


def test_runs_already_scored_by_their_rule_keep_their_best(tmp_path):
    (tmp_path / "results.csv").write_text(CSV)
    for checkpoint in (
        {"state_dict": {"model.24.anchors": None}},  # YOLOv5: the old rule is its rule
        {"state_dict": {}, "fitness_rule": "ultralytics"},  # a run begun after the change
    ):
        state = {"best_fitness": 0.42, "early_stop": {"best_fitness": 0.42, "best_epoch": 1}}
        _rescore_best(state, checkpoint, tmp_path / "results.csv")
        assert state["best_fitness"] == 0.42
