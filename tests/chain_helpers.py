"""Helpers of the robustness and provenance tests: one small synthetic slide through every
per-slide step in-process (tissue, tiles, tiny-ViT embeddings, selection, a cell table, cell
embeddings, cache) in a workflow-like output folder, in a few seconds (no StarDist: the cell
table holds a few nuclei written directly, the embeddings and cache are computed for real)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from hwsi_model.data.stores.cells import CellTable, write_cells
from hwsi_model.data.stores.selection import read_selection
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.demo.pyramid_tiff import write_pyramid_tiff
from hwsi_model.embed.extract import ExtractParams
from hwsi_model.embed.steps import (
    EncoderRun,
    build_cache_step,
    embed_cells_step,
    embed_patches_step,
)
from hwsi_model.samples import Sample
from hwsi_model.selection.steps import select_step
from hwsi_model.tiling.steps import tiling_step, tissue_step
from hwsi_model.tiling.tissue import TissueParams

TOP_K = 2


def _synthetic_image(*args, **kw) -> np.ndarray:
    """``synthetic_image`` of tests/conftest.py, loaded by path (several ``conftest`` modules
    exist, so ``import conftest`` could find another one)."""
    spec = importlib.util.spec_from_file_location(
        "hwsi_tests_conftest", Path(__file__).with_name("conftest.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.synthetic_image(*args, **kw)


def write_slide(path: Path, seed: int = 0, blank: bool = False, size: int = 1024) -> Path:
    """A 0.5 um/px pyramidal TIFF of ``size`` x ``size`` px."""
    write_pyramid_tiff(path, _synthetic_image(size, size, seed=seed, blank=blank), mpp=0.5)
    return path


def fake_cells(tiles_store: Path, selection: Path, out: Path, per_patch: int = 2) -> None:
    """A cell table with ``per_patch`` nuclei at the centre of each selected patch."""
    tiles, _ = read_tiles(tiles_store)
    sel = read_selection(selection, tiles.n_regions, TOP_K)
    rows = np.unique(sel[sel >= 0]).astype(np.int64)
    c = len(rows) * per_patch
    ps0 = tiles.geometry.patch_size_level0
    cent = np.repeat(tiles.coords[rows] + ps0 / 2, per_patch, axis=0).astype(np.float32)
    ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1) * 6.0
    table = CellTable(
        patches=rows,
        patch_offsets=np.arange(0, c + 1, per_patch, dtype=np.int64),
        patch_index=np.repeat(rows, per_patch),
        centroids=cent,
        polygons=(cent[:, None, :] + ring[None]).astype(np.float32),
        features=np.ones((c, 6), np.float32),
    )
    write_cells(out, table, {"slide_id": out.stem, "config_hash": "cells0"})


def run_chain(out: Path, slide: Path, sid: str, encoder: Path, steps: int = 7) -> dict[str, Path]:
    """Run the first ``steps`` per-slide steps of ``slide`` into ``out``; return the outputs."""
    paths = {
        "tissue": out / "tissue" / sid,
        "tiles": out / "tiles" / f"{sid}.zarr",
        "embeddings": out / "embeddings" / f"{sid}.zarr",
        "selection": out / "selection" / f"{sid}.csv",
        "cells": out / "cells" / f"{sid}.zarr",
        "cell_embeddings": out / "cell_embeddings" / f"{sid}.zarr",
        "cache": out / "cache" / f"{sid}.zarr",
    }
    params = ExtractParams(num_workers=0)
    calls = [
        lambda: tissue_step(slide, sid, paths["tissue"], TissueParams(), config_hash="t0"),
        lambda: tiling_step(
            sid,
            paths["tissue"],
            paths["tiles"],
            out / "qc" / f"{sid}.png",
            region_size=2,
            config_hash="tiles0",
        ),
        lambda: embed_patches_step(
            Sample(sid, str(slide)),
            paths["tiles"],
            EncoderRun("tiny-vit", str(encoder), params),
            paths["embeddings"],
            config_hash="emb0",
        ),
        lambda: select_step(paths["embeddings"], paths["tiles"], paths["selection"], 4, TOP_K),
        lambda: fake_cells(paths["tiles"], paths["selection"], paths["cells"]),
        lambda: embed_cells_step(
            Sample(sid, str(slide)),
            paths["tiles"],
            paths["selection"],
            paths["cells"],
            EncoderRun("tiny-vit", str(encoder), params),
            paths["cell_embeddings"],
            TOP_K,
            config_hash="cemb0",
        ),
        lambda: build_cache_step(
            sid,
            paths["tiles"],
            paths["embeddings"],
            paths["selection"],
            paths["cell_embeddings"],
            paths["cache"],
            TOP_K,
            {"rule": "test"},
            config_hash="cache0",
        ),
    ]
    for call in calls[:steps]:
        call()
    return paths
