"""Per-slide steps of the cell scale (called by ``workflow_scripts/`` and the ``hwsi`` CLI)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hwsi_model.atomic import atomic_output
from hwsi_model.cells.export import write_geojson
from hwsi_model.cells.model_registry import load_stardist, model_hash
from hwsi_model.cells.qc import render_cells_qc
from hwsi_model.cells.segment import SegmentParams, segment_patches
from hwsi_model.data.stores.cells import write_cells
from hwsi_model.data.stores.tiles import TileGrid, read_tiles
from hwsi_model.errors import HwsiError
from hwsi_model.provenance import describe
from hwsi_model.slide.reader import open_slide

log = logging.getLogger(__name__)

PATCH_LIST_COLUMN = "patch_index"


def read_patch_list(path: str | Path, tiles: TileGrid) -> np.ndarray:
    """Patch indices from a CSV with a ``patch_index`` column, checked against the grid."""
    df = pd.read_csv(path)
    if PATCH_LIST_COLUMN not in df.columns:
        raise HwsiError(f"patch list {path} has no '{PATCH_LIST_COLUMN}' column")
    idx = df[PATCH_LIST_COLUMN].to_numpy(np.int64)
    bad = idx[(idx < 0) | (idx >= len(tiles))]
    if len(bad):
        raise HwsiError(
            f"patch list {path}: indices {bad[:5].tolist()} outside 0..{len(tiles) - 1}"
        )
    return idx


def cells_inputs(
    slide_path: str | Path,
    tiles_store: str | Path,
    patch_list: str | Path | None,
    model_folder: str | Path,
) -> dict:
    """What a cell table is made from (its provenance inputs)."""
    return {
        "slide": slide_path,
        "tiles": tiles_store,
        "patch_list": patch_list,
        "model": model_folder,
    }


def segment_step(
    slide_path: str | Path,
    slide_id: str,
    tiles_store: str | Path,
    patch_list: str | Path | None,
    model_spec: str,
    out_store: str | Path,
    qc_png: str | Path,
    params: SegmentParams,
    geojson: str | Path | None = None,
    mpp_override: float | None = None,
    allow_download: bool = False,
    threads: int | None = None,
    config_hash: str = "",
    loaded: tuple | None = None,
) -> None:
    """Segment one slide's patches (``patch_list``; ``None`` = all tissue patches).

    ``loaded``: ``(model, folder)`` of :func:`load_stardist` when the caller loaded it already
    (one model for the slides of a job)."""
    tiles, tiles_attrs = read_tiles(tiles_store)
    patches = np.arange(len(tiles)) if patch_list is None else read_patch_list(patch_list, tiles)
    model, folder = loaded or load_stardist(
        model_spec, allow_download=allow_download, threads=threads
    )
    with open_slide(slide_path, slide_id=slide_id, mpp_override=mpp_override) as reader:
        table, pct, rejected = segment_patches(reader, model, tiles, patches, params)
        attrs = {
            "slide_id": slide_id,
            "model": model_spec,
            "model_path": str(folder),
            "model_hash": model_hash(folder),
            "prob_thresh": float(params.prob_thresh or model.thresholds.prob),
            "nms_thresh": float(params.nms_thresh or model.thresholds.nms),
            # Haematoxylin check (cells/detect.py): mean H optical density inside a nucleus.
            "min_hematoxylin": params.min_hematoxylin,
            "n_rejected_hematoxylin": rejected,
            "n_rays": int(model.config.n_rays),
            "mpp_segmentation": params.mpp,
            "mpp_slide": reader.mpp,
            "context_um": params.context_um,
            "mode": "all" if patch_list is None else "selected",
            "normalization": pct.to_attrs(),
            "tiles_config_hash": tiles_attrs.get("config_hash", ""),
            "config_hash": config_hash,
            "provenance": describe(
                config_hash, cells_inputs(slide_path, tiles_store, patch_list, folder)
            ),
        }
        write_cells(out_store, table, attrs)
        with atomic_output(qc_png) as tmp:
            render_cells_qc(reader, tiles, table).save(tmp, format="PNG")
    if geojson:
        write_geojson(geojson, table.polygons, table.features, patch_index=table.patch_index)
