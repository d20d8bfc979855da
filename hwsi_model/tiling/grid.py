"""The patch grid over tissue and its grouping into regions.

Geometry is defined at the target resolution (``mpp`` um/px) and stored in level-0 pixels.
The grid is anchored at the slide origin, so a patch's position never depends on where
tissue was found, and regions are ``region_size x region_size`` blocks of that grid.
Patches are ordered region by region (raster order inside each region), so the patches of
region ``r`` are the slice ``region_offsets[r]:region_offsets[r + 1]``.
"""

from __future__ import annotations

import numpy as np

from hwsi_model.data.stores.tiles import PatchGeometry, TileGrid
from hwsi_model.tiling.tissue import TissueMask


def patch_geometry(
    slide_mpp: float, mpp: float, patch_size: int, region_size: int, mpp_tolerance: float = 0.05
) -> PatchGeometry:
    """Level-0 patch size for ``patch_size`` px at ``mpp`` um/px on a ``slide_mpp`` scan.

    A slide within ``mpp_tolerance`` (relative) of the target is read at native resolution:
    resampling 257 -> 256 px would only blur the image of what is the same magnification.
    """
    ratio = mpp / slide_mpp
    ps0 = patch_size if abs(ratio - 1.0) <= mpp_tolerance else max(1, round(patch_size * ratio))
    return PatchGeometry(
        patch_size=int(patch_size),
        patch_size_level0=int(ps0),
        mpp_target=float(mpp),
        mpp_slide=float(slide_mpp),
        region_size=int(region_size),
    )


def _cell_fractions(mask: np.ndarray, edges_y: np.ndarray, edges_x: np.ndarray) -> np.ndarray:
    """Mean of ``mask`` over each cell of a grid given by pixel edges -> ``[rows, cols]``."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)
    y0, y1 = edges_y[:-1], np.maximum(edges_y[1:], edges_y[:-1] + 1)
    x0, x1 = edges_x[:-1], np.maximum(edges_x[1:], edges_x[:-1] + 1)
    y1 = np.minimum(y1, mask.shape[0])
    x1 = np.minimum(x1, mask.shape[1])
    y0 = np.minimum(y0, y1 - 1)
    x0 = np.minimum(x0, x1 - 1)
    s = (
        integral[y1[:, None], x1[None, :]]
        - integral[y0[:, None], x1[None, :]]
        - integral[y1[:, None], x0[None, :]]
        + integral[y0[:, None], x0[None, :]]
    )
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return s / area


def build_tile_grid(
    tissue: TissueMask, geometry: PatchGeometry, min_tissue_fraction: float
) -> TileGrid:
    """Patches fully inside the slide with tissue fraction >= ``min_tissue_fraction``."""
    width, height = tissue.slide_dimensions
    ps0 = geometry.patch_size_level0
    rows, cols = height // ps0, width // ps0
    R = geometry.region_size
    if rows == 0 or cols == 0 or not tissue.mask.any():
        frac = np.zeros((rows, cols))
    else:
        scale = tissue.slide_mpp / tissue.mpp  # mask px per level-0 px
        edges_y = np.round(np.arange(rows + 1) * ps0 * scale).astype(np.int64)
        edges_x = np.round(np.arange(cols + 1) * ps0 * scale).astype(np.int64)
        frac = _cell_fractions(tissue.mask, edges_y, edges_x)
    keep_r, keep_c = np.nonzero(frac >= max(min_tissue_fraction, 1e-9))
    reg_r, reg_c = keep_r // R, keep_c // R
    in_r, in_c = keep_r % R, keep_c % R
    # Region by region, raster order inside a region.
    order = np.lexsort((in_c, in_r, reg_c, reg_r))
    keep_r, keep_c, reg_r, reg_c = keep_r[order], keep_c[order], reg_r[order], reg_c[order]
    in_r, in_c = in_r[order], in_c[order]
    region_keys = reg_r.astype(np.int64) * (cols // R + 2) + reg_c
    uniq, first, counts = np.unique(region_keys, return_index=True, return_counts=True)
    region_idx = np.searchsorted(uniq, region_keys).astype(np.int32)
    region_grid = np.stack([reg_r[first], reg_c[first]], axis=1).astype(np.int32).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TileGrid(
        geometry=geometry,
        slide_dimensions=(int(width), int(height)),
        coords=np.stack([keep_c * ps0, keep_r * ps0], axis=1).astype(np.int64).reshape(-1, 2),
        grid=np.stack([keep_r, keep_c], axis=1).astype(np.int32).reshape(-1, 2),
        region=region_idx,
        region_pos=np.stack([in_r, in_c], axis=1).astype(np.int32).reshape(-1, 2),
        tissue_fraction=frac[keep_r, keep_c].astype(np.float32),
        region_coords=(region_grid[:, ::-1].astype(np.int64) * geometry.region_size_level0),
        region_grid=region_grid,
        region_offsets=offsets,
        grid_shape=(int(rows), int(cols)),
    )
