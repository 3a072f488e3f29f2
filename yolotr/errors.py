"""Errors a user can fix. Each message names the file, line or key and says what to do."""


class YolotrError(Exception):
    """Base class of every error yolotr raises on purpose."""


class ConfigError(YolotrError):
    """A model or training configuration is wrong (unknown module, bad argument, bad key)."""


class DataError(YolotrError):
    """A dataset cannot be used (no usable image, unreadable dataset YAML, ...)."""


class CheckpointError(YolotrError):
    """A checkpoint cannot be loaded (truncated, foreign class, keys or shapes that do not fit)."""
