"""Logging set-up shared by the CLI and the workflow scripts, and the one-line error contract."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hwsi_model.errors import HwsiError

_IMPORTED = time.time()
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

    Unexpected exceptions keep their traceback (they are bugs, not bad input). A finished step
    logs one ``timing`` line (see :func:`log_timing`).
    """
    setup_logging(log_file)
    start = time.perf_counter()
    try:
        func()
    except HwsiError as exc:
        logging.getLogger("hwsi").error("%s", " ".join(str(exc).split()))
        return 1
    log_timing(time.perf_counter() - start)
    return 0


def process_age_s() -> float:
    """Seconds since this process started (interpreter start-up included)."""
    try:
        import psutil  # a Snakemake dependency
    except ImportError:  # library use without Snakemake: since this module was imported
        return time.time() - _IMPORTED
    return max(0.0, time.time() - psutil.Process().create_time())


def log_timing(work_s: float) -> None:
    """Log ``timing work_s=W process_s=P``: the step's own work and the process's whole life so
    far, so that ``P - W`` is the job's fixed cost (interpreter start, imports, set-up); read by
    ``benchmarks/bench_fixed_cost.py``."""
    logging.getLogger("hwsi.timing").info(
        "timing work_s=%.3f process_s=%.3f", work_s, process_age_s()
    )
