"""The cohort manifest, ``manifest.csv``: one row per slide's cache, the table training and
evaluation start from.

Columns: ``slide_id``, ``cache`` (path), ``n_patches``, ``n_regions``, ``n_selected``,
``n_cells``, ``split``, ``label``, ``cohort``, ``encoder``, ``config_hash``, ``provenance_id``.
Slides whose jobs failed are not in it; ``failures.tsv`` beside it lists them
(:mod:`hwsi_model.data.failures`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hwsi_model.atomic import atomic_output
from hwsi_model.data.failures import SlideFailure, split_failed, write_failures_table
from hwsi_model.data.stores.cache import read_cache
from hwsi_model.samples import Sample

log = logging.getLogger(__name__)
COLUMNS = ["slide_id", "cache", "n_patches", "n_regions", "n_selected", "n_cells", "split",
           "label", "cohort", "encoder", "config_hash", "provenance_id"]  # fmt: skip


@dataclass
class ManifestRow:
    """One row of ``manifest.csv`` (the columns training uses)."""

    slide_id: str
    cache: Path
    split: str
    label: str | None = None
    cohort: str | None = None


def read_manifest(path: str | Path, splits: Sequence[str] | None = None) -> list[ManifestRow]:
    """Rows of the cohort manifest, optionally only those of ``splits``.

    A relative ``cache`` path that does not exist from the working directory is resolved against
    the manifest's folder and then its parent (manifests written by the workflow hold paths
    relative to the repository root). Slides whose cache has no patch (``n_patches`` 0: no
    tissue) are left out with a warning.
    """
    path = Path(path)
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if (r.get("n_patches") or "").strip() == "0":  # a slide without tissue
                log.warning("slide '%s' has no tissue patches: left out of training", r["slide_id"])
                continue
            cache = Path(r["cache"])
            if not cache.is_absolute() and not cache.exists():
                for base in (path.parent, path.parent.parent):
                    if (base / cache).exists():
                        cache = base / cache
                        break
            split = (r.get("split") or "train").strip() or "train"
            rows.append(
                ManifestRow(r["slide_id"], cache, split, r.get("label") or None, r.get("cohort"))
            )
    if splits is not None:
        rows = [r for r in rows if r.split in set(splits)]
    return rows


def write_manifest(
    caches: Sequence[str | Path],
    samples: Mapping[str, Sample],
    out_csv: str | Path,
    failures_tsv: str | Path | None = None,
    missing: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per cache (each validated on reading) joined to its sample-sheet row; a cache
    that is a failure placeholder is left out and listed in ``failures_tsv`` (written, header
    only when no slide failed), as are the ``missing`` slides (``{slide_id: path}``: the file
    does not exist and the slide has no cache, so the workflow did not plan it)."""
    caches, failed = split_failed(caches)
    failed += [
        SlideFailure(
            sid,
            "plan",
            "input",
            "SlideOpenError",
            f"slide '{sid}': file not found: {p}",
            input={"kind": "missing", "path": p},
        )
        for sid, p in (missing or {}).items()
    ]
    for f in failed:
        log.warning("slide '%s' excluded from the manifest: %s", f.slide_id, f.describe())
    if failures_tsv is not None:
        write_failures_table(failed, failures_tsv)
    rows = []
    for path in caches:
        _, attrs = read_cache(path)
        s = samples.get(attrs["slide_id"])
        rows.append(
            {
                "slide_id": attrs["slide_id"],
                "cache": str(path),
                "n_patches": attrs["n_patches"],
                "n_regions": attrs["n_regions"],
                "n_selected": attrs["n_selected"],
                "n_cells": attrs["n_cells"],
                "split": s.split if s else None,
                "label": s.label if s else None,
                "cohort": s.cohort if s else None,
                "encoder": attrs["encoder"],
                "config_hash": attrs.get("config_hash", ""),
                "provenance_id": (attrs.get("provenance") or {}).get("id", ""),
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
