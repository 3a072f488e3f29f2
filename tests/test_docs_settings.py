"""docs/predict.md's first section names every setting `yolotr predict` takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from yolotr.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "predict.md"
NOT_SETTINGS = {"--help", "--fuse"}  # --fuse: kept for old command lines, no effect


def test_predict_settings_are_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    section = DOC.read_text().split("## Sources, settings and results")[1].split("\n## ")[0]
    section = section.split("### COCO results")[0]
    options = [o for a in sub.choices["predict"]._actions for o in a.option_strings if o.startswith("--")]
    missing = [
        o for o in options if o not in NOT_SETTINGS and o not in section and o[2:].replace("-", "_") not in section
    ]
    assert not missing, f"docs/predict.md's settings do not mention {missing}"
    assert "--end2end on|off|auto" in section and "end2end=False" in section
