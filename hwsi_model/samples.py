"""Sample sheet: CSV with ``slide_id,path`` and optional ``mpp,split,label,cohort`` columns."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pandas as pd

from hwsi_model.errors import SampleSheetError
from hwsi_model.workflow_config import load_schema

OPTIONAL_COLUMNS = ("mpp", "split", "label", "cohort")


@dataclass(frozen=True)
class Sample:
    """One slide of the cohort. ``path`` is absolute or relative to the working directory."""

    slide_id: str
    path: str
    mpp: float | None = None
    split: str | None = None
    label: str | None = None
    cohort: str | None = None


#: What the schema's slide_id pattern says, for error messages.
SLIDE_ID_RULE = (
    "a slide_id names output files: ASCII letters, digits, '.', '_' and '-' only, starting with "
    "a letter or digit, no '..' (rename the slide in the sheet; its file name may stay)"
)


def _clean(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def read_sample_sheet(path: str | Path) -> dict[str, Sample]:
    """Read and validate a sample sheet.

    Relative slide paths are resolved against the sheet's folder (so a cohort folder can be
    moved as a whole). Slide files are not opened here: a missing or broken slide fails its
    own jobs, not the whole cohort.

    Returns:
        Samples keyed by ``slide_id``, in sheet order.

    Raises:
        SampleSheetError: missing file or column, invalid ``slide_id`` (path separators, ``..``),
            duplicate ids, non-numeric or non-positive ``mpp``.
    """
    path = Path(path)
    if path.is_dir():
        raise SampleSheetError(f"sample sheet {path} is a folder, not a CSV file")
    if not path.is_file():
        raise SampleSheetError(f"sample sheet {path} does not exist")
    try:
        df = pd.read_csv(path, dtype={"slide_id": str, "path": str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SampleSheetError(f"sample sheet {path}: cannot parse CSV ({exc})") from exc
    missing = [c for c in ("slide_id", "path") if c not in df.columns]
    if missing:
        raise SampleSheetError(
            f"sample sheet {path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns))})"
        )
    if "mpp" in df.columns:
        mpp = pd.to_numeric(df["mpp"], errors="coerce")
        bad = df.loc[mpp.isna() & df["mpp"].notna(), "slide_id"].tolist()
        if bad:
            raise SampleSheetError(f"sample sheet {path}: mpp is not a number for {bad}")
        df["mpp"] = mpp

    # One validator for every row: jsonschema.validate() would check the schema itself per row
    # (5 ms each: most of the planning time of a 10,000-slide cohort).
    validator = jsonschema.Draft202012Validator(load_schema("samples"))
    base = path.resolve().parent
    samples: dict[str, Sample] = {}
    for i, row in enumerate(df.to_dict("records")):
        record = {
            k: _clean(v) for k, v in row.items() if k in ("slide_id", "path", *OPTIONAL_COLUMNS)
        }
        record = {k: v for k, v in record.items() if v is not None}
        for key in ("split", "label", "cohort"):
            if key in record:
                record[key] = str(record[key])
        try:
            validator.validate(record)
        except jsonschema.ValidationError as exc:
            field = ".".join(map(str, exc.absolute_path)) or "row"
            message = exc.message
            if field == "slide_id" and exc.validator == "pattern":
                message = SLIDE_ID_RULE  # the rule in words, not the regular expression
            raise SampleSheetError(
                f"sample sheet {path}, row {i + 2} ({record.get('slide_id', '?')!s}): "
                f"{field}: {message}"
            ) from None
        sid = record["slide_id"]
        if sid in samples:
            raise SampleSheetError(f"sample sheet {path}: duplicate slide_id '{sid}'")
        slide_path = Path(record["path"]).expanduser()
        if not slide_path.is_absolute():
            slide_path = base / slide_path
        samples[sid] = Sample(
            slide_id=sid,
            path=str(slide_path),
            mpp=float(record["mpp"]) if "mpp" in record else None,
            split=record.get("split"),
            label=record.get("label"),
            cohort=record.get("cohort"),
        )
    if not samples:
        raise SampleSheetError(f"sample sheet {path} has no rows")
    return samples


def missing_files(samples: Mapping[str, Sample]) -> dict[str, str]:
    """``{slide_id: path}`` of the rows whose slide file does not exist (one stat per row)."""
    return {sid: s.path for sid, s in samples.items() if not os.path.exists(s.path)}


def usable_slides(
    samples: Mapping[str, Sample], missing: Mapping[str, str], finished: Callable[[str], str]
) -> list[str]:
    """The slides (sheet order) whose file exists or whose output ``finished(slide_id)`` does:
    a slide whose file went missing keeps what it finished, and is left out of what still
    needs the file instead of stopping the plan."""
    return [sid for sid in samples if sid not in missing or os.path.exists(finished(sid))]
