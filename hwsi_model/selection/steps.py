"""The per-slide selection step (``select_patches``, run by rule ``extract_slide``): embeddings
and grid in, the selected patches per region out. NumPy only: it never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwsi_model.data.current import write_record
from hwsi_model.data.stores.patch_embeddings import read_embeddings
from hwsi_model.data.stores.selection import write_selection
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.errors import HwsiError
from hwsi_model.provenance import describe
from hwsi_model.selection.select import select_patches
from hwsi_model.selection.settings import SelectionConfig


def select_step(
    emb_store: str | Path,
    tiles_store: str | Path,
    out_csv: str | Path,
    n_candidates: int = 32,
    top_k: int = 16,
    query: str = "slide_mean",
    query_file: str | None = None,
    config_hash: str = "",
) -> np.ndarray:
    """Select diagnostically relevant patches per region; write ``region,rank,patch_index``.

    The inputs are embeddings, the grid and a query that exists at inference (the slide's
    mean embedding, or prompt/question vectors from ``query_file``, ``.npy [Q, D]``): never
    the slide's report or an answer. The provenance goes to ``{out_csv stem}.json`` beside it.
    """
    emb, _ = read_embeddings(emb_store)
    tiles, _ = read_tiles(tiles_store)
    cfg = SelectionConfig(n_candidates=n_candidates, top_k=top_k, query=query)
    qvec = np.load(query_file) if (query != "slide_mean" and query_file) else None
    if query != "slide_mean" and qvec is None:
        raise HwsiError(f"selection query '{query}' needs embed.selection.query_file (.npy [Q, D])")
    sel = (
        select_patches(emb, tiles.region_offsets, cfg, qvec)
        if len(tiles)
        else np.zeros((0, top_k), np.int64)
    )
    write_selection(out_csv, sel)
    write_record(
        out_csv, describe(config_hash, selection_csv_inputs(emb_store, tiles_store, query_file))
    )
    return sel


def selection_csv_inputs(
    emb_store: str | Path, tiles_store: str | Path, query_file: str | None
) -> dict[str, str | Path | None]:
    """What a selection is made from (its provenance inputs)."""
    return {"embeddings": emb_store, "tiles": tiles_store, "query_file": query_file or None}
