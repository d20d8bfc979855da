"""One slide's failure never stops the cohort: a per-slide job that fails on its slide writes
failure placeholders (:mod:`hwsi_model.data.failures`) and ends successfully.

Only :class:`~hwsi_model.errors.SlideInputError` (the file cannot be opened or decoded, no
resolution) is isolated; a configuration error or a bug still fails the job, and with
``on_slide_error: stop`` every failure does.

A job of several slides (:func:`run_batch`, ``embed.slides_per_job > 1``) also isolates an
unexpected error of one slide (a bug, a slide too large for memory): failing the job would make
Snakemake remove the outputs its other slides finished. The slide's record then names the
exception's class and its log holds the traceback; a configuration error still fails the job,
since it would fail every slide alike.
"""

from __future__ import annotations

import logging
import os
import time
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
    isolate: tuple[type[Exception], ...] = (SlideInputError,),
) -> T | SlideFailure:
    """Run one per-slide job; on an ``isolate`` error (a :class:`SlideInputError`) write
    placeholders at ``outputs`` (``folders``: those that are folders; recorded relative to
    ``outdir``) and return the failure instead of raising, unless ``on_slide_error`` is
    ``"stop"``. A :class:`ConfigError` always raises."""
    if on_slide_error not in ON_SLIDE_ERROR:
        raise ConfigError(f"on_slide_error must be one of {ON_SLIDE_ERROR}, not {on_slide_error!r}")
    try:
        return run()
    except ConfigError:
        raise
    except isolate as exc:
        if on_slide_error == "stop":
            raise
        if not isinstance(exc, SlideInputError):  # a bug: keep its traceback in the log
            log.exception("slide '%s': unexpected error in %s", sample.slide_id, job)
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


def run_batch(
    job: str,
    samples: Sequence[Sample],
    run_one: Callable[[Sample], T],
    outputs_of: Callable[[str], list[tuple[str, bool]]],
    outdir: str | Path,
    on_slide_error: str = "skip",
) -> dict[str, T | SlideFailure]:
    """Run ``run_one`` on each slide of a batch job in turn (with a progress bar), each isolated
    as by :func:`run_isolated` and also against unexpected errors (module doc);
    ``outputs_of(slide_id)``: the slide's ``(path, is a folder)`` outputs
    (:meth:`~hwsi_model.data.layout.OutputLayout.job_outputs`). Returns ``{slide_id: what
    run_one returned, or the failure}``; logs one line per slide with its wall time."""
    from tqdm import tqdm

    results: dict[str, T | SlideFailure] = {}
    for sample in tqdm(samples, desc=job, unit="slide"):
        start = time.perf_counter()
        outputs = outputs_of(sample.slide_id)
        results[sample.slide_id] = run_isolated(
            job,
            sample,
            [p for p, _ in outputs],
            lambda s=sample: run_one(s),
            outdir=outdir,
            on_slide_error=on_slide_error,
            folders=[p for p, folder in outputs if folder],
            isolate=(Exception,),
        )
        log.info("slide '%s': %.2f s in %s", sample.slide_id, time.perf_counter() - start, job)
    failed = [s for s, r in results.items() if isinstance(r, SlideFailure)]
    log.info(
        "%s: %d slides, %d excluded%s",
        job,
        len(results),
        len(failed),
        f": {failed}" if failed else "",
    )
    return results
