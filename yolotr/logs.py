"""The ``yolotr`` logger: what the CLI shows, a Python user sees too (as Ultralytics does it).

Every module logs through ``logging.getLogger("yolotr")``. On first use of an entry point (the
``YOLO`` facade, the CLI) :func:`get_logger` gives that logger a plain stderr handler (message only,
INFO level), unless the application configured logging itself: the root logger or the ``yolotr``
logger already has a handler. Then yolotr adds nothing and the application's configuration decides
what is shown and how. Our handler does not propagate to the root logger, so an application that
configures logging later does not see each message twice.

``verbose=False`` on the facade's methods runs them inside :func:`verbosity`, which hides INFO
messages (warnings still show) for the duration of the call; :func:`set_verbosity` does the same for
the rest of the process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

LOGGER_NAME = "yolotr"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each message.

    Notebooks and test harnesses replace ``sys.stderr``; binding the stream at creation would write
    to a stale one.
    """

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def get_logger() -> logging.Logger:
    """The ``yolotr`` logger, with a plain stderr handler added on first use if nobody configured logging.

    Idempotent: once the logger has a handler (ours or the application's), nothing changes.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def _level(verbose: bool | int) -> int:
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    return int(verbose)


def set_verbosity(verbose: bool | int) -> None:
    """From now on show INFO messages (``True``), only warnings and errors (``False``), or a level (int)."""
    get_logger().setLevel(_level(verbose))


@contextlib.contextmanager
def verbosity(verbose: bool | int = True) -> Iterator[logging.Logger]:
    """Within the block: ``True`` leaves the level as it is, ``False`` hides INFO messages, an int sets it.

    The logger's previous level is restored on exit.
    """
    logger = get_logger()
    previous = logger.level
    level = previous
    if verbose is False:
        level = max(logging.WARNING, logger.getEffectiveLevel())
    elif not isinstance(verbose, bool):
        level = int(verbose)
    if level == previous:  # setLevel clears the cache of every logger: skip it when nothing changes
        yield logger
        return
    logger.setLevel(level)
    try:
        yield logger
    finally:
        logger.setLevel(previous)
