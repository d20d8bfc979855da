"""Logging set-up shared by the CLI and the workflow scripts, and the one-line error contract."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hwsi_model.errors import HwsiError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (appending; folders are created)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)


def run_reporting_errors(func: Callable[[], object], log_file: str | Path | None = None) -> int:
    """Run a step; an :class:`HwsiError` becomes one ``ERROR`` line and exit status 1.

    Unexpected exceptions keep their traceback (they are bugs, not bad input).
    """
    setup_logging(log_file)
    try:
        func()
    except HwsiError as exc:
        logging.getLogger("hwsi").error("%s", " ".join(str(exc).split()))
        return 1
    return 0
