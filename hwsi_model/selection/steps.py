"""The per-slide selection step (rule ``select_patches``): embeddings and grid in, the selected
patches per region out. NumPy only: the job never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwsi_model.data.stores.patch_embeddings import read_embeddings
from hwsi_model.data.stores.selection import write_selection
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.errors import HwsiError
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
) -> np.ndarray:
    """Select diagnostically relevant patches per region; write ``region,rank,patch_index``.

    The inputs are embeddings, the grid and a query that exists at inference (the slide's
    mean embedding, or prompt/question vectors from ``query_file``, ``.npy [Q, D]``): never
    the slide's report or an answer.
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
    return sel
