"""The per-slide cell-embedding store (Zarr v3), written atomically.

Layout of ``cell_embeddings/{slide_id}.zarr`` (schema ``hwsi.cell_embeddings`` v1; C cells of
the M selected patches):

====================  =======================  ==============================================
array                 shape, dtype             meaning
====================  =======================  ==============================================
``cell_emb``          ``[C, Dt+6] float16``    encoder tokens pooled in each nucleus ++
                                               standardised morphometrics
``cell_pos``          ``[C, 2] float32``       nucleus centroid inside its patch, (x, y) 0..1
``cell_offsets``      ``[M+1] int64``          cells of selected patch m
``selected_patches``  ``[M] int64``            the selected patches (rows of the tiles store)
====================  =======================  ==============================================

Attributes: slide, ``cell_dim``, encoder name, checkpoint and its hash, config hash, provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.zarr_io import open_store, put_array, rising

CELL_EMB_SCHEMA = "hwsi.cell_embeddings"
CELL_EMB_SCHEMA_VERSION = 1
ARRAYS = ("cell_emb", "cell_pos", "cell_offsets", "selected_patches")


@dataclass
class CellEmbeddings:
    """The arrays of a cell-embedding store (shapes in the module docstring)."""

    cell_emb: np.ndarray
    cell_pos: np.ndarray
    cell_offsets: np.ndarray
    selected_patches: np.ndarray

    def __len__(self) -> int:
        return int(self.cell_emb.shape[0])


def write_cell_embeddings(path: str | Path, cells: CellEmbeddings, attrs: dict[str, Any]) -> None:
    """Write ``cells`` at ``path`` (temporary name, renamed when complete; attributes last)."""
    dtypes = {"cell_emb": np.float16, "cell_pos": np.float32}
    with atomic_output(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in ARRAYS:
            put_array(
                root, name, np.ascontiguousarray(getattr(cells, name), dtypes.get(name, np.int64))
            )
        root.attrs.update(
            {
                "schema": CELL_EMB_SCHEMA,
                "schema_version": CELL_EMB_SCHEMA_VERSION,
                "n_cells": len(cells),
                "cell_dim": int(cells.cell_emb.shape[1]),
                **attrs,
            }
        )


def read_cell_embeddings(path: str | Path) -> tuple[CellEmbeddings, dict[str, Any]]:
    """The arrays and attributes of a cell-embedding store."""
    root, attrs = open_store(
        path,
        CELL_EMB_SCHEMA,
        CELL_EMB_SCHEMA_VERSION,
        "cell-embedding store",
        "re-run extract_slide",
    )
    return CellEmbeddings(**{name: root[name][...] for name in ARRAYS}), attrs


def validate_cell_embeddings(path: str | Path) -> list[str]:
    """Problems of a cell-embedding store: offsets over the selected patches, one position per
    cell, width against ``cell_dim`` (empty list: valid)."""
    root, attrs = open_store(path, CELL_EMB_SCHEMA, CELL_EMB_SCHEMA_VERSION, "cell-embedding store")
    missing = [a for a in ARRAYS if a not in root]
    if missing:
        return [f"array '{a}' missing" for a in missing]
    emb, off = root["cell_emb"], root["cell_offsets"][...]
    c, m = emb.shape[0], root["selected_patches"].shape[0]
    problems = rising(off, c, "cell_offsets")
    if len(off) != m + 1:
        problems.append(f"cell_offsets must have {m + 1} entries (one per selected patch + 1)")
    if root["cell_pos"].shape != (c, 2):
        problems.append("cell_pos does not have one row per cell")
    if emb.ndim != 2 or emb.shape[1] != attrs.get("cell_dim"):
        problems.append(f"cell_emb width {emb.shape[1:]} != cell_dim {attrs.get('cell_dim')}")
    return problems
