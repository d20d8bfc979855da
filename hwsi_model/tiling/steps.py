"""Per-slide steps of the workflow (called by ``workflow_scripts/`` and the ``hwsi`` CLI)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from hwsi_model.atomic import atomic_output
from hwsi_model.data.failures import split_failed
from hwsi_model.data.stores.tiles import TileGrid, read_tiles, write_tiles
from hwsi_model.provenance import describe
from hwsi_model.slide.reader import open_slide
from hwsi_model.tiling.grid import build_tile_grid, patch_geometry
from hwsi_model.tiling.qc import render_tiling_qc
from hwsi_model.tiling.tissue import TissueParams, load_tissue, save_tissue, tissue_mask_for_slide

log = logging.getLogger(__name__)


def tissue_step(
    slide_path: str | Path,
    slide_id: str,
    out_dir: str | Path,
    params: TissueParams,
    mpp_override: float | None = None,
    config_hash: str = "",
) -> None:
    """Detect tissue on a slide and write ``out_dir/{mask.png,thumbnail.jpg,tissue.json}``."""
    with open_slide(slide_path, slide_id=slide_id, mpp_override=mpp_override) as reader:
        log.info(
            "slide '%s': %s, %d x %d px, %.4f um/px (%s)",
            slide_id,
            reader.vendor,
            *reader.dimensions,
            reader.mpp,
            reader.mpp_info.source,
        )
        tissue, thumb = tissue_mask_for_slide(reader, params)
        save_tissue(out_dir, tissue, thumb, reader, params, config_hash=config_hash)
    log.info(
        "slide '%s': tissue %.3f mm^2 in %d piece(s), mask %d x %d at %.2f um/px",
        slide_id,
        tissue.area_um2 / 1e6,
        tissue.n_pieces,
        tissue.mask.shape[1],
        tissue.mask.shape[0],
        tissue.mpp,
    )


def tiles_inputs(slide_path: str | Path | None, tissue_dir: str | Path) -> dict:
    """What a patch grid is made from (its provenance inputs)."""
    return {"slide": slide_path, "tissue": tissue_dir}


def tiling_step(
    slide_id: str,
    tissue_dir: str | Path,
    out_store: str | Path,
    qc_png: str | Path,
    mpp: float = 0.5,
    patch_size: int = 256,
    region_size: int = 16,
    min_tissue_fraction: float = 0.25,
    mpp_tolerance: float = 0.05,
    config_hash: str = "",
) -> TileGrid:
    """Grid the tissue of one slide into patches and regions; write the store and QC picture."""
    tissue, thumb = load_tissue(tissue_dir)
    geometry = patch_geometry(tissue.slide_mpp, mpp, patch_size, region_size, mpp_tolerance)
    tiles = build_tile_grid(tissue, geometry, min_tissue_fraction)
    if len(tiles) == 0:
        log.warning(
            "slide '%s': no patch reaches %.0f%% tissue; writing an empty grid",
            slide_id,
            100 * min_tissue_fraction,
        )
    attrs = {
        "slide_id": slide_id,
        "slide_path": tissue.meta.get("slide_path"),
        "mpp_source": tissue.meta.get("mpp_source"),
        "min_tissue_fraction": min_tissue_fraction,
        "mpp_tolerance": mpp_tolerance,
        "tissue": {
            "params": tissue.meta.get("params"),
            "threshold": tissue.threshold,
            "mask_mpp": tissue.mpp,
            "area_um2": tissue.area_um2,
        },
        "config_hash": config_hash,
        "provenance": describe(
            config_hash, tiles_inputs(tissue.meta.get("slide_path"), tissue_dir)
        ),
    }
    write_tiles(out_store, tiles, attrs)
    with atomic_output(qc_png) as tmp:
        render_tiling_qc(thumb, tissue, tiles, title=slide_id).save(tmp, format="PNG")
    log.info(
        "slide '%s': %d patches of %d px (%d px at level 0, %.4f um/px) in %d regions",
        slide_id,
        len(tiles),
        geometry.patch_size,
        geometry.patch_size_level0,
        geometry.mpp_effective,
        tiles.n_regions,
    )
    return tiles


def tiling_summary(stores: list[str | Path], out_tsv: str | Path) -> pd.DataFrame:
    """One row per slide (patches, regions, geometry) from the tiles stores' attributes;
    slides whose ``prepare_slide`` failed (placeholders) are left out, each logged."""
    stores, failed = split_failed(stores)
    for f in failed:
        log.warning("slide '%s' left out: %s", f.slide_id, f.describe())
    rows = []
    for store in stores:
        tiles, attrs = read_tiles(store)
        g = tiles.geometry
        rows.append(
            {
                "slide_id": attrs["slide_id"],
                "n_patches": len(tiles),
                "n_regions": tiles.n_regions,
                "mpp_slide": g.mpp_slide,
                "mpp_source": attrs.get("mpp_source"),
                "mpp_effective": round(g.mpp_effective, 6),
                "patch_size_level0": g.patch_size_level0,
                "tissue_area_mm2": round(attrs["tissue"]["area_um2"] / 1e6, 4),
                "config_hash": attrs.get("config_hash"),
            }
        )
    df = pd.DataFrame(rows, columns=None if rows else ["slide_id"])
    with atomic_output(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    return df
