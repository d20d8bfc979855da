"""How a per-slide job runs its steps: keep what is current, run and time the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from hwsi_model.data.current import is_current

log = logging.getLogger(__name__)
timing = logging.getLogger("hwsi.timing")
T = TypeVar("T")
_setup_s = [0.0]  # set-up seconds so far in this process (a step's own time excludes them)


class Once:
    """A model (an encoder, a StarDist model) loaded on first use, timed as set-up; shared by
    the steps of a job, and by the slides of a job that runs several."""

    def __init__(self, name: str, load: Callable[[], T]) -> None:
        self.name, self._load, self._value, self.loaded = name, load, None, False

    def __call__(self):
        if not self.loaded:
            start = time.perf_counter()
            self._value, self.loaded = self._load(), True
            took = time.perf_counter() - start
            _setup_s[0] += took
            timing.info("timing setup=%s s=%.3f", self.name, took)
        return self._value


class JobSteps:
    """The steps of one job on one slide, in order.

    Logs, for ``benchmarks/bench_fixed_cost.py``: ``timing step=NAME work_s=S`` per step run
    and ``timing setup=NAME s=S`` per model loaded (fixed cost, not work)."""

    def __init__(self, slide_id: str) -> None:
        self.slide_id = slide_id
        self.ran: list[str] = []
        self.kept: list[str] = []
        self._start = time.perf_counter()
        self.seconds = 0.0  # wall time of the steps, set by finish()

    def step(
        self,
        name: str,
        output: str | Path,
        config_hash: str,
        inputs: Mapping[str, str | Path | None],
        run: Callable[[], object],
        also: Iterable[str | Path] = (),
    ) -> bool:
        """Run ``run`` unless ``output`` (and the files ``also`` written with it) is current
        for ``config_hash`` and ``inputs``; return whether it ran."""
        if is_current(output, config_hash, inputs, also):
            log.info("slide '%s': %s is current, kept (%s)", self.slide_id, name, output)
            self.kept.append(name)
            return False
        start, setup = time.perf_counter(), _setup_s[0]
        try:
            run()
        except Exception as exc:  # which step failed, for the slide's failure record
            exc.step = getattr(exc, "step", None) or name
            raise
        work = time.perf_counter() - start - (_setup_s[0] - setup)  # models loaded meanwhile
        timing.info("timing step=%s work_s=%.3f", name, work)
        self.ran.append(name)
        return True

    def finish(self) -> None:
        self.seconds = time.perf_counter() - self._start
        log.info(
            "slide '%s': ran %s; kept %s",
            self.slide_id,
            ", ".join(self.ran) or "nothing",
            ", ".join(self.kept) or "nothing",
        )
