"""Failure records: a slide whose job failed on its own input is excluded, visibly.

A per-slide job that fails on the slide itself (unreadable, no resolution: a
:class:`~hwsi_model.errors.SlideInputError`) does not fail the workflow. It writes a
*placeholder* at each of its outputs instead, so that Snakemake sees the job done and the cohort
goes on:

- a folder output (a Zarr store, the tissue folder) holds only ``FAILED.json``, the record;
- a PNG output (a QC picture) is a picture that says why the slide failed;
- any other file holds the record as JSON (the selection's provenance record, the GeoJSON) or
  one line saying so (the selection CSV).

A placeholder records no provenance, so it is never current: the job tries the slide again
whenever Snakemake re-runs it (the slide file changed, the sheet's mpp changed, a parameter
changed), and ``hwsi retry-failed OUTDIR`` removes every placeholder so that the next run retries
them all. The aggregates (tiling summary, manifest) skip failed slides and ``failures.tsv`` lists
them. A job downstream of a failed one writes its own placeholders, with the first failure as
its ``cause``.

The record (JSON): ``slide_id``, ``job``, ``step``, ``error`` (the exception's class),
``reason`` (one line), ``time`` (UTC, ISO 8601), ``input`` (the slide file's fingerprint: size,
mtime, partial sha256; ``kind: missing`` when absent), ``outputs`` (the placeholders written,
relative to ``outdir``), ``cause`` (the upstream record, or ``null``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic

log = logging.getLogger(__name__)

#: The record inside a folder placeholder.
FAILED_NAME = "FAILED.json"
#: Columns of ``failures.tsv``.
TABLE_COLUMNS = ("slide_id", "job", "step", "error", "reason", "time", "first_failure")


@dataclass(frozen=True)
class SlideFailure:
    """Why one job failed on one slide (module doc)."""

    slide_id: str
    job: str
    step: str
    error: str
    reason: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    input: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    cause: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = list(self.outputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SlideFailure:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["outputs"] = tuple(known.get("outputs") or ())
        return cls(**known)

    @property
    def first(self) -> SlideFailure:
        """The failure this one follows from (itself when it is the first)."""
        return SlideFailure.from_dict(self.cause).first if self.cause else self

    def describe(self) -> str:
        """``job (step): reason`` of the first failure, for one line of a log or a table."""
        f = self.first
        return f"{f.job} ({f.step}): {f.reason}"


def write_placeholders(
    outputs: Sequence[str | Path], failure: SlideFailure, folders: Iterable[str | Path] = ()
) -> None:
    """Replace each output by a placeholder holding ``failure`` (module doc); ``folders`` are
    the outputs that are folders (slide ids may hold dots, so a name does not tell). A
    finished output of an earlier run is removed: it no longer matches the slide as it is now."""
    record = json.dumps(failure.to_dict(), indent=1) + "\n"
    folder_set = {Path(f) for f in folders}
    for out in map(Path, outputs):
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        if out in folder_set:
            out.mkdir(parents=True)
            write_text_atomic(out / FAILED_NAME, record)
        elif out.suffix.lower() == ".png":
            _failure_picture(out, failure)
        elif out.suffix.lower() in (".json", ".geojson"):
            write_text_atomic(out, record)
        else:
            write_text_atomic(out, f"# FAILED: {failure.slide_id}: {failure.describe()}\n")


def _failure_picture(path: Path, failure: SlideFailure) -> None:
    """A small PNG saying which slide failed and why (a QC folder then shows every slide)."""
    import textwrap

    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    lines = [f"slide '{failure.slide_id}' FAILED", failure.describe()]
    wrapped = [w for line in lines for w in textwrap.wrap(line, 70) or [""]]
    img = Image.new("RGB", (640, 24 + 16 * len(wrapped)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(wrapped):
        draw.text((12, 12 + 16 * i), line, fill=(160, 0, 0) if i == 0 else (0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    info = PngInfo()
    info.add_text("hwsi_failed", "1")
    img.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)


def failure_of(path: str | Path) -> SlideFailure | None:
    """The failure a folder placeholder holds, or ``None`` for a real output."""
    rec = Path(path) / FAILED_NAME
    if not rec.is_file():
        return None
    return SlideFailure.from_dict(json.loads(rec.read_text()))


def split_failed(paths: Iterable[str | Path]) -> tuple[list[str | Path], list[SlideFailure]]:
    """(outputs that are real, failures of the placeholders) of a job's folder outputs."""
    ok, failed = [], []
    for p in paths:
        f = failure_of(p)
        if f is None:
            ok.append(p)
        else:
            failed.append(f)
    return ok, failed


def write_failures_table(failures: Sequence[SlideFailure], out_tsv: str | Path) -> None:
    """``failures.tsv``: one row per excluded slide (header only when none), the first
    failure's job, step, error and reason; ``first_failure`` is its time."""
    rows = ["\t".join(TABLE_COLUMNS)]
    for f in sorted(failures, key=lambda f: f.slide_id):
        first = f.first
        cells = (f.slide_id, first.job, first.step, first.error, first.reason, f.time, first.time)
        rows.append("\t".join(" ".join(str(c).split()) for c in cells))
    write_text_atomic(out_tsv, "\n".join(rows) + "\n")


def read_failures_table(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``failures.tsv`` (empty when the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    lines = p.read_text().splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]


def find_placeholders(outdir: str | Path) -> list[tuple[Path, SlideFailure]]:
    """Every folder placeholder under ``outdir`` with its failure (``hwsi retry-failed``)."""
    found = []
    for rec in sorted(Path(outdir).glob(f"*/*/{FAILED_NAME}")):
        try:
            found.append((rec.parent, SlideFailure.from_dict(json.loads(rec.read_text()))))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: unreadable failure record (%s)", rec, exc)
    return found


def remove_placeholders(outdir: str | Path) -> list[Path]:
    """Delete every placeholder of every failed job under ``outdir`` (each record lists its
    job's outputs) so that the next run tries those slides again; return what was removed.
    Real outputs are never touched: a listed file that is not a placeholder is kept."""
    removed: list[Path] = []
    for folder, failure in find_placeholders(outdir):
        for target in [folder, *(Path(outdir) / o for o in failure.outputs)]:
            if target in removed:
                continue
            if target.is_dir() and failure_of(target) is not None:
                shutil.rmtree(target)
            elif target.is_file() and _is_file_placeholder(target):
                target.unlink()
            else:
                continue
            removed.append(target)
    return removed


def _is_file_placeholder(path: Path) -> bool:
    if path.suffix.lower() == ".png":
        return path.stat().st_size < 64_000 and _png_says_failed(path)
    try:
        head = path.read_text(errors="replace")[:4096]
    except OSError:
        return False
    if head.startswith("# FAILED:"):
        return True
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and {"slide_id", "job", "reason"} <= set(data)


def _png_says_failed(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        return img.info.get("hwsi_failed") == "1"
