"""The per-slide tiles store (Zarr v3), written atomically.

Layout of ``tiles/{slide_id}.zarr`` (schema ``hwsi.tiles`` v1):

=========================  ================  ==============================================
array                      shape, dtype      meaning
=========================  ================  ==============================================
``coords``                 ``[N, 2] int64``  patch top-left (x, y), level-0 px
``grid``                   ``[N, 2] int32``  (row, col) in the slide-wide patch grid
``region``                 ``[N] int32``     region index of each patch
``region_pos``             ``[N, 2] int32``  (row, col) of the patch inside its region
``tissue_fraction``        ``[N] float32``   tissue fraction of the patch (0-1)
``regions/coords``         ``[R, 2] int64``  region top-left (x, y), level-0 px
``regions/grid``           ``[R, 2] int32``  (row, col) in the region grid
``regions/patch_offsets``  ``[R+1] int64``   patches of region r: ``offsets[r]:offsets[r+1]``
=========================  ================  ==============================================

Attributes record the slide, every geometry parameter (mpp requested/slide/effective, patch
and region sizes at both resolutions), the tissue parameters, the config hash and versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.errors import StoreError
from hwsi_model.tiling.grid import PatchGeometry, TileGrid

TILES_SCHEMA = "hwsi.tiles"
TILES_SCHEMA_VERSION = 1

_PATCH_ARRAYS = ("coords", "grid", "region", "region_pos", "tissue_fraction")


def _put(group: zarr.Group, name: str, data: np.ndarray) -> None:
    # One chunk per array: a slide's grid is small (tens of thousands of rows at most).
    chunks = tuple(max(1, s) for s in data.shape)
    group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data


def write_tiles(path: str | Path, tiles: TileGrid, attrs: dict[str, Any]) -> None:
    """Write ``tiles`` to a Zarr v3 store at ``path`` (temporary name, renamed when complete)."""
    import hwsi_model

    g = tiles.geometry
    meta = {
        "schema": TILES_SCHEMA,
        "schema_version": TILES_SCHEMA_VERSION,
        "slide_dimensions": list(tiles.slide_dimensions),
        "mpp_target": g.mpp_target,
        "mpp_slide": g.mpp_slide,
        "mpp_effective": g.mpp_effective,
        "patch_size": g.patch_size,
        "patch_size_level0": g.patch_size_level0,
        "region_size": g.region_size,
        "region_size_level0": g.region_size_level0,
        "grid_shape": list(tiles.grid_shape),
        "n_patches": len(tiles),
        "n_regions": tiles.n_regions,
        "hwsi_version": hwsi_model.__version__,
        "zarr_version": zarr.__version__,
        **attrs,
    }
    with atomic_output(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in _PATCH_ARRAYS:
            _put(root, name, getattr(tiles, name))
        _put(root, "regions/coords", tiles.region_coords)
        _put(root, "regions/grid", tiles.region_grid)
        _put(root, "regions/patch_offsets", tiles.region_offsets)
        # Attributes last: a store without them is never complete.
        root.attrs.update(meta)


def read_tiles(path: str | Path) -> tuple[TileGrid, dict[str, Any]]:
    """Read a tiles store; returns the grid and the store's attributes.

    Raises:
        StoreError: missing store, foreign schema, or another schema version.
    """
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"tiles store {path} does not exist or is not a Zarr group") from exc
    attrs = dict(root.attrs)
    if attrs.get("schema") != TILES_SCHEMA:
        raise StoreError(f"{path} is not a tiles store (schema {attrs.get('schema')!r})")
    if attrs.get("schema_version") != TILES_SCHEMA_VERSION:
        raise StoreError(
            f"tiles store {path} has schema version {attrs.get('schema_version')}, this hwsi "
            f"reads {TILES_SCHEMA_VERSION}; re-run the tiling step"
        )
    geometry = PatchGeometry(
        patch_size=attrs["patch_size"],
        patch_size_level0=attrs["patch_size_level0"],
        mpp_target=attrs["mpp_target"],
        mpp_slide=attrs["mpp_slide"],
        region_size=attrs["region_size"],
    )
    arrays = {name: root[name][...] for name in _PATCH_ARRAYS}
    tiles = TileGrid(
        geometry=geometry,
        slide_dimensions=tuple(attrs["slide_dimensions"]),
        region_coords=root["regions/coords"][...],
        region_grid=root["regions/grid"][...],
        region_offsets=root["regions/patch_offsets"][...],
        grid_shape=tuple(attrs["grid_shape"]),
        **arrays,
    )
    return tiles, attrs
