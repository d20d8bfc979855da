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

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.cells.detect import FEATURES
from hwsi_model.cells.segment import CellTable
from hwsi_model.errors import StoreError

CELLS_SCHEMA = "hwsi.cells"
CELLS_SCHEMA_VERSION = 1

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
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"cell store {path} does not exist or is not a Zarr group") from exc
    attrs = dict(root.attrs)
    if attrs.get("schema") != CELLS_SCHEMA or attrs.get("schema_version") != CELLS_SCHEMA_VERSION:
        raise StoreError(
            f"{path} is not a {CELLS_SCHEMA} v{CELLS_SCHEMA_VERSION} store "
            f"(schema {attrs.get('schema')!r} v{attrs.get('schema_version')}); re-run segmentation"
        )
    table = CellTable(**{field: root[name][...] for name, field in _ARRAYS.items()})
    return table, attrs
