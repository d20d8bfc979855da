"""Per-slide steps of the embedding stage (run by :mod:`hwsi_model.jobs.extract`).

Importing this module does not import torch: the engine is imported by the steps that encode,
so a job whose embeddings are all current never pays for it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from hwsi_model.data.stores.cache import validate_cache, write_cache
from hwsi_model.data.stores.cell_embeddings import (
    CellEmbeddings,
    read_cell_embeddings,
    write_cell_embeddings,
)
from hwsi_model.data.stores.cells import read_cells
from hwsi_model.data.stores.patch_embeddings import patch_embedding_writer, read_embeddings
from hwsi_model.data.stores.selection import read_selection
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.embed.cell_features import pool_tokens, standardise_morphometrics
from hwsi_model.embed.params import ExtractParams
from hwsi_model.errors import HwsiError, StoreError
from hwsi_model.provenance import describe
from hwsi_model.samples import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderRun:
    """Which patch encoder (a registry name), from which local weights, run how.

    ``loaded``: the encoder already loaded (:meth:`loaded_once`), so that the steps of one job
    (patch and cell embeddings) share one copy."""

    name: str
    checkpoint: str | None = None
    params: ExtractParams = field(default_factory=ExtractParams)
    loaded: object | None = field(default=None, compare=False, repr=False)

    def load(self):
        if self.loaded is not None:
            return self.loaded
        from hwsi_model.devices import resolve_device
        from hwsi_model.encoders import load_encoder

        device = resolve_device(self.params.device)
        return load_encoder(self.name, checkpoint=self.checkpoint or None, device=device)

    def loaded_once(self) -> EncoderRun:
        """This run with its encoder loaded now (later :meth:`load` calls return it)."""
        return self if self.loaded is not None else replace(self, loaded=self.load())


def _checkpoint_input(checkpoint: str | None) -> str | None:
    """The encoder checkpoint as a provenance input when it is a local path."""
    return checkpoint if checkpoint and Path(checkpoint).exists() else None


def patch_embedding_inputs(slide: Sample, tiles_store: str | Path, run: EncoderRun) -> dict:
    """What patch embeddings are made from (their provenance inputs)."""
    return {"slide": slide.path, "tiles": tiles_store, "encoder": _checkpoint_input(run.checkpoint)}


def cell_embedding_inputs(
    slide: Sample,
    tiles_store: str | Path,
    selection_csv: str | Path,
    cells_store: str | Path,
    run: EncoderRun,
) -> dict:
    """What cell embeddings are made from (their provenance inputs)."""
    return {
        "slide": slide.path,
        "tiles": tiles_store,
        "selection": selection_csv,
        "cells": cells_store,
        "encoder": _checkpoint_input(run.checkpoint),
    }


def cache_inputs(
    tiles_store: str | Path,
    emb_store: str | Path,
    selection_csv: str | Path,
    cell_emb_store: str | Path,
) -> dict:
    """What a slide's cache is assembled from (its provenance inputs)."""
    return {
        "tiles": tiles_store,
        "embeddings": emb_store,
        "selection": selection_csv,
        "cell_embeddings": cell_emb_store,
    }


def _encoder_attrs(encoder, name: str, checkpoint: str | None) -> dict:
    return {
        "encoder": name,
        "encoder_checkpoint": str(checkpoint or ""),
        "encoder_checkpoint_hash": getattr(encoder, "checkpoint_hash", ""),
        "patch_dim": int(encoder.embed_dim),
    }


def embed_patches_step(
    slide: Sample,
    tiles_store: str | Path,
    run: EncoderRun,
    out_store: str | Path,
    config_hash: str = "",
) -> None:
    """Embed all patches of a slide into ``out_store`` (``emb [N, D] float16``), streamed.

    ``slide.mpp`` (um/px), when set, overrides the file's level-0 resolution."""
    from hwsi_model.embed.extract import embed_slide

    tiles, tattrs = read_tiles(tiles_store)
    encoder = run.load()
    n, d = len(tiles), int(encoder.embed_dim)
    slide_id, params = slide.slide_id, run.params
    with patch_embedding_writer(out_store, n, d) as (write, attrs):
        embed_slide(slide.path, slide_id, tiles, encoder, write, params, slide.mpp)
        attrs.update(
            {
                "slide_id": slide_id,
                "mpp": tattrs["mpp_effective"],
                "patch_size": tattrs["patch_size"],
                "tiles_config_hash": tattrs.get("config_hash", ""),
                "config_hash": config_hash,
                "extract": asdict(params),
                **_encoder_attrs(encoder, run.name, run.checkpoint),
                "provenance": describe(
                    config_hash, patch_embedding_inputs(slide, tiles_store, run)
                ),
            }
        )
    log.info("slide '%s': %d patch embeddings of width %d", slide_id, n, d)


def embed_cells_step(
    slide: Sample,
    tiles_store: str | Path,
    selection_csv: str | Path,
    cells_store: str | Path,
    run: EncoderRun,
    out_store: str | Path,
    top_k: int,
    config_hash: str = "",
) -> None:
    """Per-nucleus embeddings of the selected patches: pooled encoder tokens ++ morphometrics.

    The selected patches are encoded again for their token maps (about 6 % of the tissue),
    so the patch step never has to keep token maps of every patch.
    """
    from hwsi_model.embed.dataset import SlidePatchDataset
    from hwsi_model.embed.extract import encode_batches

    slide_id, params = slide.slide_id, run.params
    tiles, _ = read_tiles(tiles_store)
    sel = read_selection(selection_csv, tiles.n_regions, top_k)
    rows = sel[sel >= 0]
    table, _ = read_cells(cells_store)
    pos_in_table = np.searchsorted(table.patches, rows)
    missing = np.setdiff1d(rows, table.patches)
    if len(missing):
        raise HwsiError(
            f"slide '{slide_id}': {len(missing)} selected patches were not segmented; "
            "re-run extract_slide (its nuclei step) with the current selection"
        )
    encoder = run.load()
    ps, ps0 = tiles.geometry.patch_size, tiles.geometry.patch_size_level0
    morph = standardise_morphometrics(table.features)
    embs, poss, counts = [], [], []
    ds = SlidePatchDataset(slide.path, slide_id, tiles, slide.mpp, params.rows_per_item, rows)
    for start, end, pemb, tokens in encode_batches(ds, encoder, params, with_tokens=True):
        for j in range(end - start):
            p = pos_in_table[start + j]
            a, b = table.patch_offsets[p], table.patch_offsets[p + 1]
            xy = tiles.coords[rows[start + j]].astype(np.float32)
            cent = (table.centroids[a:b] - xy) * (ps / ps0)
            polys = (table.polygons[a:b] - xy) * (ps / ps0)
            if tokens is None:  # CNN encoders: the patch embedding stands in for the tokens
                pooled = np.repeat(pemb[j : j + 1].astype(np.float32), b - a, axis=0)
            else:
                pooled = pool_tokens(tokens[j], polys, cent, ps)
            embs.append(np.concatenate([pooled, morph[a:b]], axis=1))
            poss.append(np.clip(cent / ps, 0.0, 1.0))
            counts.append(b - a)
    width = (encoder.token_dim or encoder.embed_dim) + morph.shape[1]
    cell_emb = np.concatenate(embs) if embs else np.zeros((0, width), np.float32)
    cell_pos = np.concatenate(poss) if poss else np.zeros((0, 2), np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cells = CellEmbeddings(cell_emb, cell_pos, offsets, rows)
    write_cell_embeddings(
        out_store,
        cells,
        {
            "slide_id": slide_id,
            "config_hash": config_hash,
            **_encoder_attrs(encoder, run.name, run.checkpoint),
            "provenance": describe(
                config_hash,
                cell_embedding_inputs(slide, tiles_store, selection_csv, cells_store, run),
            ),
        },
    )
    log.info("slide '%s': %d cell embeddings of width %d", slide_id, len(cell_emb), width)


def build_cache_step(
    slide_id: str,
    tiles_store: str | Path,
    emb_store: str | Path,
    selection_csv: str | Path,
    cell_emb_store: str | Path,
    out_store: str | Path,
    top_k: int,
    selection_rule: dict,
    config_hash: str = "",
) -> None:
    """Assemble the per-slide multi-scale cache from the step outputs."""
    tiles, tattrs = read_tiles(tiles_store)
    emb, eattrs = read_embeddings(emb_store)
    sel = read_selection(selection_csv, tiles.n_regions, top_k)
    cells, cattrs = read_cell_embeddings(cell_emb_store)
    if not np.array_equal(cells.selected_patches, sel[sel >= 0]):
        raise StoreError(f"{cell_emb_store} was made for another selection; re-run extract_slide")
    S = tiles.geometry.region_size
    grid = np.full((tiles.n_regions, S, S), -1, np.int64)
    grid[tiles.region, tiles.region_pos[:, 0], tiles.region_pos[:, 1]] = np.arange(len(tiles))
    arrays = {
        "patch_emb": emb,
        "patch_coords": tiles.coords,
        "patch_region": tiles.region.astype(np.int64),
        "region_grid": grid,
        "region_pos": tiles.region_grid.astype(np.int64),
        "selected": sel,
        "cell_emb": cells.cell_emb,
        "cell_pos": cells.cell_pos,
        "cell_offsets": cells.cell_offsets,
    }
    attrs = {
        "slide_id": slide_id,
        "slide_path": tattrs.get("slide_path"),
        "mpp": tattrs["mpp_effective"],
        "mpp_target": tattrs["mpp_target"],
        "patch_size": tattrs["patch_size"],
        "patch_size_level0": tattrs["patch_size_level0"],
        "region_size": S,
        "top_k": top_k,
        "selection_rule": selection_rule,
        "encoder": eattrs["encoder"],
        "encoder_checkpoint_hash": eattrs.get("encoder_checkpoint_hash", ""),
        "patch_dim": int(emb.shape[1]),
        "cell_dim": int(cattrs["cell_dim"]),
        "config_hash": config_hash,
        "tiles_config_hash": tattrs.get("config_hash", ""),
        "n_patches": len(tiles),
        "n_regions": tiles.n_regions,
        "n_selected": int((sel >= 0).sum()),
        "n_cells": int(arrays["cell_emb"].shape[0]),
        "provenance": describe(
            config_hash, cache_inputs(tiles_store, emb_store, selection_csv, cell_emb_store)
        ),
    }
    write_cache(out_store, arrays, attrs)
    problems = validate_cache(out_store)
    if problems:  # a bug upstream: never leave an invalid cache that looks finished
        import shutil

        shutil.rmtree(out_store, ignore_errors=True)
        raise StoreError(f"slide '{slide_id}': built cache is invalid: {problems[0]}")
