"""Validate every store of a cohort's output folder (``hwsi check OUTDIR``).

For each store under ``OUTDIR`` -- ``tiles/``, ``cells/``, ``embeddings/``,
``cell_embeddings/`` and ``cache/`` (``{slide}.zarr``) -- the checks are:

- it opens as a Zarr group with this package's schema and schema version (a store whose
  attributes are missing was never finished: attributes are written last);
- its arrays agree with each other and with its recorded counts (offsets rise from 0 to the
  number of rows, one row per patch/cell, finite embeddings; the cache gets
  :func:`hwsi_model.embed.cache_store.validate_cache`);
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

import numpy as np
import zarr

from hwsi_model.errors import StoreError

#: Folder of each kind of store under the outdir, in pipeline order.
KINDS = ("tiles", "cells", "embeddings", "cell_embeddings", "cache")


def _rising(off: np.ndarray, end: int, what: str) -> list[str]:
    if off.ndim != 1 or len(off) == 0 or off[0] != 0 or off[-1] != end or (np.diff(off) < 0).any():
        return [f"{what} must rise from 0 to {end}"]
    return []


def _check_tiles(path: Path) -> list[str]:
    from hwsi_model.tiling.store import read_tiles

    tiles, attrs = read_tiles(path)
    n, r = len(tiles), tiles.n_regions
    problems = []
    if n != attrs.get("n_patches") or r != attrs.get("n_regions"):
        problems.append(
            f"{n} patches / {r} regions stored, attributes say "
            f"{attrs.get('n_patches')} / {attrs.get('n_regions')}"
        )
    for name in ("grid", "region", "region_pos", "tissue_fraction"):
        if getattr(tiles, name).shape[0] != n:
            problems.append(f"array '{name}' does not have one row per patch")
    problems += _rising(tiles.region_offsets, n, "regions/patch_offsets")
    if n and (tiles.region.min() < 0 or tiles.region.max() >= r):
        problems.append("region indices out of range")
    return problems


def _check_cells(path: Path) -> list[str]:
    from hwsi_model.cells.store import read_cells

    table, attrs = read_cells(path)
    c, p = len(table), table.patches.shape[0]
    problems = []
    if c != attrs.get("n_cells"):
        problems.append(f"{c} cells stored, attributes say {attrs.get('n_cells')}")
    problems += _rising(table.patch_offsets, c, "patch_offsets")
    if len(table.patch_offsets) != p + 1:
        problems.append(f"patch_offsets must have {p + 1} entries")
    for name in ("patch_index", "polygons", "features"):
        if getattr(table, name).shape[0] != c:
            problems.append(f"array '{name}' does not have one row per cell")
    if (np.diff(table.patches) <= 0).any():
        problems.append("patches are not ascending")
    return problems


def _open(path: Path, schema: str) -> tuple[zarr.Group, dict[str, Any]]:
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError("missing or not a Zarr group") from exc
    attrs = dict(root.attrs)
    if attrs.get("schema") != schema:
        raise StoreError(
            f"not a {schema} store (schema {attrs.get('schema')!r}): unfinished or foreign"
        )
    return root, attrs


def _check_embeddings(path: Path) -> list[str]:
    root, attrs = _open(path, "hwsi.patch_embeddings")
    if "emb" not in root:
        return ["array 'emb' missing"]
    emb = root["emb"][...]
    problems = []
    if emb.shape != (attrs.get("n_patches"), attrs.get("patch_dim")):
        problems.append(
            f"emb shape {emb.shape} != (n_patches, patch_dim) "
            f"({attrs.get('n_patches')}, {attrs.get('patch_dim')})"
        )
    if not np.isfinite(emb.astype(np.float32)).all():
        problems.append("emb has non-finite values")
    return problems


def _check_cell_embeddings(path: Path) -> list[str]:
    root, attrs = _open(path, "hwsi.cell_embeddings")
    missing = [
        a for a in ("cell_emb", "cell_pos", "cell_offsets", "selected_patches") if a not in root
    ]
    if missing:
        return [f"array '{a}' missing" for a in missing]
    emb, off = root["cell_emb"], root["cell_offsets"][...]
    c, m = emb.shape[0], root["selected_patches"].shape[0]
    problems = _rising(off, c, "cell_offsets")
    if len(off) != m + 1:
        problems.append(f"cell_offsets must have {m + 1} entries (one per selected patch + 1)")
    if root["cell_pos"].shape != (c, 2):
        problems.append("cell_pos does not have one row per cell")
    if emb.ndim != 2 or emb.shape[1] != attrs.get("cell_dim"):
        problems.append(f"cell_emb width {emb.shape[1:]} != cell_dim {attrs.get('cell_dim')}")
    return problems


def _check_cache(path: Path) -> list[str]:
    from hwsi_model.embed.cache_store import validate_cache

    return validate_cache(path)


_CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "tiles": _check_tiles,
    "cells": _check_cells,
    "embeddings": _check_embeddings,
    "cell_embeddings": _check_cell_embeddings,
    "cache": _check_cache,
}


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
    tiles = _attrs(outdir / "tiles" / f"{slide}.zarr")
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
        if upstream.parent.name in KINDS:
            # A store of this outdir (recorded relative to the workflow's directory, or from
            # before the outdir was moved or copied).
            upstream = outdir / upstream.parent.name / upstream.name
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
    return _cross_checks(Path(outdir), kind, path.name[: -len(".zarr")], _attrs(path))


def check_cohort(outdir: str | Path) -> dict[str, dict[str, list[str]]]:
    """Validate every store under ``outdir``: kind -> {slide: problems} (empty list: valid).

    Leftover temporaries of a store are reported under its slide as an unfinished write, even
    when a finished store of that slide exists next to them.
    """
    outdir = Path(outdir)
    results: dict[str, dict[str, list[str]]] = {}
    for kind in KINDS:
        folder = outdir / kind
        if not folder.is_dir():
            continue
        found: dict[str, list[str]] = {}
        for path in sorted(folder.glob("*.zarr")):
            found[path.name[: -len(".zarr")]] = check_store(outdir, kind, path)
        for tmp in sorted(folder.glob(".*.zarr.tmp-*")):
            slide = tmp.name[1:].split(".zarr.tmp-")[0]
            found.setdefault(slide, []).append(
                f"unfinished write: temporary {tmp.name} left by a killed (or running) job"
            )
        if found:
            results[kind] = dict(sorted(found.items()))
    return results
