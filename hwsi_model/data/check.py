"""Validate every store of a cohort's output folder (``hwsi check OUTDIR``).

For each store under ``OUTDIR`` -- ``tiles/``, ``cells/``, ``embeddings/``,
``cell_embeddings/`` and ``cache/`` (``{slide}.zarr``) -- the checks are:

- it opens as a Zarr group with this package's schema and schema version (a store whose
  attributes are missing was never finished: attributes are written last);
- its arrays agree with each other and with its recorded counts (offsets rise from 0 to the
  number of rows, one row per patch/cell, finite embeddings): each store's own validator, in
  its module under :mod:`hwsi_model.data.stores`;
- rows match the slide's tiles store (embeddings: one per patch);
- it was made from the upstream stores that are there now: the upstream provenance ids it
  recorded equal the current ones, else it is stale (an upstream store was rebuilt and this one
  was not);
- leftover temporaries (``.{slide}.zarr.tmp-*``) are listed too: a job killed during a write
  leaves one (as does a job still running).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwsi_model.data.failures import SlideFailure, failure_of, find_placeholders
from hwsi_model.data.layout import KINDS, STORES, OutputLayout, slide_of_store
from hwsi_model.data.stores.cache import validate_cache
from hwsi_model.data.stores.cell_embeddings import validate_cell_embeddings
from hwsi_model.data.stores.cells import validate_cells
from hwsi_model.data.stores.patch_embeddings import validate_embeddings
from hwsi_model.data.stores.tiles import validate_tiles
from hwsi_model.errors import StoreError

#: Each store's own validator (in its module under :mod:`hwsi_model.data.stores`).
_CHECKS: dict[str, Callable[[str | Path], list[str]]] = {
    "tiles": validate_tiles,
    "cells": validate_cells,
    "embeddings": validate_embeddings,
    "cell_embeddings": validate_cell_embeddings,
    "cache": validate_cache,
}


_KIND_OF_FOLDER = {folder: kind for kind, (folder, _) in STORES.items()}


def _attrs(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return {}
    return data.get("attributes", {}) or {}


def _cross_checks(outdir: Path, kind: str, slide: str, attrs: dict[str, Any]) -> list[str]:
    """Row counts against the tiles store; recorded upstream provenance ids against the current
    upstream stores (stale when an upstream store was rebuilt after this one)."""
    problems = []
    layout = OutputLayout(str(outdir))
    tiles = _attrs(Path(layout.tiles(slide)))
    if (
        kind in ("embeddings", "cache")
        and tiles
        and attrs.get("n_patches") != tiles.get("n_patches")
    ):
        problems.append(
            f"{attrs.get('n_patches')} patches but the tiles store has {tiles.get('n_patches')}"
        )
    inputs = (attrs.get("provenance") or {}).get("inputs") or {}
    for name, fp in inputs.items():
        if not isinstance(fp, dict) or fp.get("kind") != "store" or not fp.get("provenance_id"):
            continue
        upstream = Path(fp["path"])
        kind_up = next(
            (k for k, (folder, _) in STORES.items() if folder == upstream.parent.name), None
        )
        if kind_up:
            # A store of this outdir (recorded relative to the workflow's directory, or from
            # before the outdir was moved or copied).
            upstream = Path(layout.store(kind_up, slide_of_store(upstream)))
        if not upstream.exists():
            continue  # moved or deleted: reported with its own kind when it belongs here
        now = (_attrs(upstream).get("provenance") or {}).get("id")
        if now and now != fp["provenance_id"]:
            problems.append(
                f"stale: made from another version of its {name} store ({upstream.name}); re-run"
            )
    return problems


def check_store(outdir: str | Path, kind: str, path: str | Path) -> list[str]:
    """Problems of one store of ``kind`` (see :data:`KINDS`); empty list: valid."""
    path = Path(path)
    try:
        problems = _CHECKS[kind](path)
    except StoreError as exc:
        return [str(exc).replace(f"{path} ", "").replace(f"{path}", "store")]
    except (KeyError, ValueError, OSError) as exc:  # unreadable metadata or chunks
        return [f"unreadable: {type(exc).__name__}: {exc}"]
    if problems:
        return problems
    return _cross_checks(Path(outdir), kind, slide_of_store(path), _attrs(path))


def check_cohort(outdir: str | Path) -> dict[str, dict[str, list[str]]]:
    """Validate every store under ``outdir``: kind -> {slide: problems} (empty list: valid).

    Leftover temporaries of a store are reported under its slide as an unfinished write, even
    when a finished store of that slide exists next to them. Failure placeholders (slides
    excluded after a failure, :func:`excluded_slides`) are not stores and are left out.
    """
    outdir = Path(outdir)
    results: dict[str, dict[str, list[str]]] = {}
    for kind in KINDS:
        folder = outdir / STORES[kind][0]
        if not folder.is_dir():
            continue
        found: dict[str, list[str]] = {}
        for path in sorted(folder.glob("*.zarr")):
            if failure_of(path) is None:
                found[slide_of_store(path)] = check_store(outdir, kind, path)
        for tmp in sorted(folder.glob(".*.zarr.tmp-*")):
            slide = tmp.name[1:].split(".zarr.tmp-")[0]
            found.setdefault(slide, []).append(
                f"unfinished write: temporary {tmp.name} left by a killed (or running) job"
            )
        if found:
            results[kind] = dict(sorted(found.items()))
    return results


def excluded_slides(outdir: str | Path) -> dict[str, SlideFailure]:
    """The slides excluded under ``outdir`` (a failure placeholder in one of their outputs):
    slide -> the first failure."""
    return {f.slide_id: f.first for _, f in find_placeholders(outdir)}
