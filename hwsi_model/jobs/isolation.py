"""One slide's failure never stops the cohort: a per-slide job that fails on its slide writes
failure placeholders (:mod:`hwsi_model.data.failures`) and ends successfully.

Only :class:`~hwsi_model.errors.SlideInputError` (the file cannot be opened or decoded, no
resolution) is isolated; a configuration error or a bug still fails the job, and with
``on_slide_error: stop`` every failure does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hwsi_model.data.failures import SlideFailure, failure_of, write_placeholders
from hwsi_model.errors import ConfigError, SlideInputError
from hwsi_model.provenance import input_fingerprint
from hwsi_model.samples import Sample

log = logging.getLogger(__name__)
T = TypeVar("T")
ON_SLIDE_ERROR = ("skip", "stop")


class UpstreamFailedError(SlideInputError):
    """A job's input is the placeholder of a failed job: the slide is excluded."""

    def __init__(self, failure: SlideFailure) -> None:
        super().__init__(f"slide '{failure.slide_id}': excluded earlier, {failure.describe()}")
        self.failure = failure


def require_not_failed(*inputs: str | Path) -> None:
    """Raise :class:`UpstreamFailedError` when one of ``inputs`` is a failure placeholder."""
    for p in inputs:
        f = failure_of(p)
        if f is not None:
            raise UpstreamFailedError(f)


def run_isolated(
    job: str,
    sample: Sample,
    outputs: Sequence[str | Path],
    run: Callable[[], T],
    outdir: str | Path,
    on_slide_error: str = "skip",
    folders: Sequence[str | Path] = (),
) -> T | SlideFailure:
    """Run one per-slide job; on a :class:`SlideInputError` write placeholders at ``outputs``
    (``folders``: those that are folders; recorded relative to ``outdir``) and return the
    failure instead of raising, unless ``on_slide_error`` is ``"stop"``."""
    if on_slide_error not in ON_SLIDE_ERROR:
        raise ConfigError(f"on_slide_error must be one of {ON_SLIDE_ERROR}, not {on_slide_error!r}")
    try:
        return run()
    except SlideInputError as exc:
        if on_slide_error == "stop":
            raise
        failure = SlideFailure(
            slide_id=sample.slide_id,
            job=job,
            step=getattr(exc, "step", None) or "input",
            error=type(exc).__name__,
            reason=" ".join(str(exc).split()),
            input=input_fingerprint(sample.path) if sample.path else {"kind": "missing"},
            outputs=tuple(os.path.relpath(o, outdir) for o in outputs),
            cause=exc.failure.to_dict() if isinstance(exc, UpstreamFailedError) else None,
        )
        write_placeholders(outputs, failure, folders)
        log.warning(
            "slide '%s' excluded: %s (failure placeholders written; fix the input, or run "
            "`hwsi retry-failed %s`; on_slide_error: stop makes this fatal)",
            sample.slide_id, failure.describe(), outdir,
        )  # fmt: skip
        return failure
