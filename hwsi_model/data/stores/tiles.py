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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.zarr_io import open_store, put_array, rising

TILES_SCHEMA = "hwsi.tiles"
TILES_SCHEMA_VERSION = 1

_PATCH_ARRAYS = ("coords", "grid", "region", "region_pos", "tissue_fraction")


@dataclass(frozen=True)
class PatchGeometry:
    """Patch and region sizes of one slide.

    Attributes:
        patch_size: patch side at the target resolution, px.
        patch_size_level0: patch side at level 0, px (512 for 256 px at 0.5 on a 0.25 slide).
        mpp_target: requested resolution, um/px.
        mpp_slide: level-0 resolution of the slide, um/px.
        region_size: region side in patches.
    """

    patch_size: int
    patch_size_level0: int
    mpp_target: float
    mpp_slide: float
    region_size: int

    @property
    def mpp_effective(self) -> float:
        """Resolution the patches really have, um/px (e.g. 0.499 for a 0.499 scan read at 0.5)."""
        return self.mpp_slide * self.patch_size_level0 / self.patch_size

    @property
    def region_size_level0(self) -> int:
        return self.patch_size_level0 * self.region_size


@dataclass
class TileGrid:
    """Patches over tissue and their regions (N patches, R regions).

    Attributes:
        coords: ``[N, 2] int64`` top-left (x, y) of each patch, level-0 px.
        grid: ``[N, 2] int32`` (row, col) of each patch in the slide-wide patch grid.
        region: ``[N] int32`` region index of each patch.
        region_pos: ``[N, 2] int32`` (row, col) of each patch inside its region.
        tissue_fraction: ``[N] float32`` fraction of the patch covered by tissue.
        region_coords: ``[R, 2] int64`` top-left (x, y) of each region, level-0 px.
        region_grid: ``[R, 2] int32`` (row, col) of each region in the region grid.
        region_offsets: ``[R + 1] int64`` patches of region r are ``offsets[r]:offsets[r+1]``.
        grid_shape: (rows, cols) of the slide-wide patch grid.
    """

    geometry: PatchGeometry
    slide_dimensions: tuple[int, int]
    coords: np.ndarray
    grid: np.ndarray
    region: np.ndarray
    region_pos: np.ndarray
    tissue_fraction: np.ndarray
    region_coords: np.ndarray
    region_grid: np.ndarray
    region_offsets: np.ndarray
    grid_shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.region_coords.shape[0])


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
            put_array(root, name, getattr(tiles, name))
        put_array(root, "regions/coords", tiles.region_coords)
        put_array(root, "regions/grid", tiles.region_grid)
        put_array(root, "regions/patch_offsets", tiles.region_offsets)
        # Attributes last: a store without them is never complete.
        root.attrs.update(meta)


def read_tiles(path: str | Path) -> tuple[TileGrid, dict[str, Any]]:
    """Read a tiles store; returns the grid and the store's attributes.

    Raises:
        StoreError: missing store, foreign schema, or another schema version.
    """
    root, attrs = open_store(
        path, TILES_SCHEMA, TILES_SCHEMA_VERSION, "tiles store", "re-run the tiling step"
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


def validate_tiles(path: str | Path) -> list[str]:
    """Problems of a tiles store: counts against its attributes, one row per patch, region
    offsets and indices (empty list: valid). Raises :class:`StoreError` when it does not open.
    """
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
    problems += rising(tiles.region_offsets, n, "regions/patch_offsets")
    if n and (tiles.region.min() < 0 or tiles.region.max() >= r):
        problems.append("region indices out of range")
    return problems
