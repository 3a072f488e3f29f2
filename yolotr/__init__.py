"""yolotr: YOLO-family object detectors with first-class Transformer blocks."""

from yolotr.errors import CheckpointError, ConfigError, DataError, YolotrError
from yolotr.logs import set_verbosity

__version__ = "0.1.0"
__all__ = [
    "YOLO",
    "compare",
    "YolotrError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "set_verbosity",
    "__version__",
]


def __getattr__(name: str):
    if name == "YOLO":
        from yolotr.yolo import YOLO

        return YOLO
    if name == "compare":
        from yolotr.engine.compare import compare

        return compare
    raise AttributeError(name)
