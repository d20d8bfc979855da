"""The per-slide cell table (Zarr v3), written atomically.

Layout of ``cells/{slide_id}.zarr`` (schema ``hwsi.cells`` v1; C cells, P segmented patches,
R rays, F features; coordinates level-0 px):

=======================  =====================  ============================================
array                    shape, dtype           meaning
=======================  =====================  ============================================
``patches``              ``[P] int64``          segmented patch indices (rows of the tiles store)
``patch_offsets``        ``[P+1] int64``        cells of ``patches[p]``: ``offsets[p]:offsets[p+1]``
``patch_index``          ``[C] int64``          patch of each cell
``centroid``             ``[C, 2] float32``     (x, y) of the nucleus centre
``polygon``              ``[C, R, 2] float32``  (x, y) of the StarDist outline (R rays)
``features``             ``[C, F] float32``     ``attrs.feature_names``: area_um2, perimeter_um,
                                                eccentricity, solidity, prob, hematoxylin
=======================  =====================  ============================================

Attributes: model name/path/hash, thresholds, segmentation mpp, normalisation percentiles,
mode (selected/all), context margin, tiles config hash, schema version, software versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.zarr_io import open_store, rising

CELLS_SCHEMA = "hwsi.cells"
CELLS_SCHEMA_VERSION = 1

# Per-cell morphometric features, in the order of the cell table's ``features`` array.
FEATURES = ("area_um2", "perimeter_um", "eccentricity", "solidity", "prob", "hematoxylin")


@dataclass
class CellTable:
    """Nuclei of the segmented patches of one slide (C cells, P patches).

    Attributes:
        patches: ``[P] int64`` segmented patch indices (rows of the tiles store), ascending.
        patch_offsets: ``[P + 1] int64``; cells of ``patches[p]`` are ``offsets[p]:offsets[p+1]``.
        patch_index: ``[C] int64`` patch of each cell.
        centroids: ``[C, 2] float32`` (x, y) level-0 px.
        polygons: ``[C, R, 2] float32`` (x, y) level-0 px.
        features: ``[C, F] float32`` morphometrics, columns :data:`FEATURES`.
    """

    patches: np.ndarray
    patch_offsets: np.ndarray
    patch_index: np.ndarray
    centroids: np.ndarray
    polygons: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.centroids.shape[0])


_ARRAYS = {
    "patches": "patches",
    "patch_offsets": "patch_offsets",
    "patch_index": "patch_index",
    "centroid": "centroids",
    "polygon": "polygons",
    "features": "features",
}


def write_cells(path: str | Path, table: CellTable, attrs: dict[str, Any]) -> None:
    """Write ``table`` to a Zarr v3 store at ``path`` (temporary name, renamed when complete)."""
    import hwsi_model

    meta = {
        "schema": CELLS_SCHEMA,
        "schema_version": CELLS_SCHEMA_VERSION,
        "n_cells": len(table),
        "n_patches": int(table.patches.shape[0]),
        "feature_names": list(FEATURES),
        "hwsi_version": hwsi_model.__version__,
        "zarr_version": zarr.__version__,
        **attrs,
    }
    with atomic_output(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, field in _ARRAYS.items():
            data = np.ascontiguousarray(getattr(table, field))
            # ~1 MB chunks along cells; one chunk for small tables.
            rows = max(1, min(data.shape[0], (1 << 20) // max(1, data[:1].nbytes)))
            chunks = (rows, *data.shape[1:]) if data.ndim else ()
            chunks = tuple(max(1, c) for c in chunks)
            root.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data
        root.attrs.update(meta)  # last: a store without attributes is incomplete


def read_cells(path: str | Path) -> tuple[CellTable, dict[str, Any]]:
    """Read a cell table; raises :class:`StoreError` for missing or foreign stores."""
    root, attrs = open_store(
        path, CELLS_SCHEMA, CELLS_SCHEMA_VERSION, "cell store", "re-run segmentation"
    )
    table = CellTable(**{field: root[name][...] for name, field in _ARRAYS.items()})
    return table, attrs


def validate_cells(path: str | Path) -> list[str]:
    """Problems of a cell store: counts, offsets, one row per cell, ascending patches (empty
    list: valid). Raises :class:`StoreError` when it does not open."""
    table, attrs = read_cells(path)
    c, p = len(table), table.patches.shape[0]
    problems = []
    if c != attrs.get("n_cells"):
        problems.append(f"{c} cells stored, attributes say {attrs.get('n_cells')}")
    problems += rising(table.patch_offsets, c, "patch_offsets")
    if len(table.patch_offsets) != p + 1:
        problems.append(f"patch_offsets must have {p + 1} entries")
    for name in ("patch_index", "polygons", "features"):
        if getattr(table, name).shape[0] != c:
            problems.append(f"array '{name}' does not have one row per cell")
    if (np.diff(table.patches) <= 0).any():
        problems.append("patches are not ascending")
    return problems
