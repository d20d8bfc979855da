"""Is a step's output current? What it recorded when written against the parameters and inputs now.

Every per-slide output records its provenance (:mod:`hwsi_model.provenance`): the hash of the
parameters it was made with and a fingerprint of each input (a file's size, mtime and partial
hash; an upstream store's provenance id). An output is current when it is complete, its
recorded hash equals the step's hash now and its recorded input fingerprints equal the inputs'
fingerprints now (:func:`~hwsi_model.provenance.same_fingerprint`: a small file whose whole
content hashes the same is the same input, even if Snakemake touched it). A job that runs
several steps (:mod:`hwsi_model.jobs`) keeps a current output and redoes the rest, so a changed
parameter re-runs only the steps that depend on it even though Snakemake re-runs the whole job.

Where the record is read from:

- a Zarr store written by this package: its root attribute ``provenance`` (stores are renamed
  into place when complete, and the cache also carries ``complete: true``);
- the tissue folder: ``tissue.json``'s ``provenance``;
- a CSV (the selection): its record ``{name}.json`` beside it (:func:`record_path`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic
from hwsi_model.provenance import input_fingerprint, same_fingerprint, store_attrs


def record_path(path: str | Path) -> Path:
    """Where a plain file's provenance record lives: ``selection/s.csv`` -> ``selection/s.json``."""
    return Path(path).with_suffix(".json")


def write_record(path: str | Path, provenance: Mapping[str, Any]) -> Path:
    """Write the provenance record of the plain file ``path`` (after the file itself)."""
    rec = record_path(path)
    write_text_atomic(rec, json.dumps({"provenance": dict(provenance)}, indent=1) + "\n")
    return rec


def recorded_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance an output recorded, or ``None`` (absent, incomplete, unreadable)."""
    p = Path(path)
    if p.is_dir():
        attrs = store_attrs(p)
        if attrs is None and (p / "tissue.json").is_file():
            attrs = _read_json(p / "tissue.json")
        if not attrs or attrs.get("complete", True) is not True:
            return None
        return attrs.get("provenance") or None
    if p.is_file() and record_path(p).is_file() and record_path(p) != p:
        return (_read_json(record_path(p)) or {}).get("provenance") or None
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(
    output: str | Path,
    config_hash: str,
    inputs: Mapping[str, str | Path | None],
    also: Iterable[str | Path] = (),
) -> bool:
    """Whether ``output`` was made with ``config_hash`` from exactly these ``inputs`` (the
    name -> path mapping its step records, ``None`` entries left out) and the files ``also``
    written with it still exist."""
    rec = recorded_provenance(output)
    if rec is None or rec.get("config_hash") != config_hash:
        return False
    if not all(Path(p).exists() for p in also):
        return False
    recorded = rec.get("inputs") or {}
    expected = {name: p for name, p in inputs.items() if p is not None}
    if set(recorded) != set(expected):
        return False
    for name, path in expected.items():
        fp = recorded[name]
        # The same file (a step may record it resolved) with the same fingerprint as then.
        if Path(str(fp.get("path"))).resolve() != Path(path).resolve():
            return False
        if not same_fingerprint(fp, input_fingerprint(fp["path"])):
            return False
    return True
