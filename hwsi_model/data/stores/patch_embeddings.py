"""The per-slide patch-embedding store (Zarr v3), streamed and written atomically.

Layout of ``embeddings/{slide_id}.zarr`` (schema ``hwsi.patch_embeddings`` v1):

=======  ===================  ==========================================================
array    shape, dtype         meaning
=======  ===================  ==========================================================
``emb``  ``[N, D] float16``   encoder embedding of every tissue patch (rows = tiles rows)
=======  ===================  ==========================================================

Attributes: slide, ``n_patches``, ``patch_dim``, mpp, patch size, encoder name, checkpoint and
its hash, extraction parameters, tiles and own config hashes, provenance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.zarr_io import RowWriter, open_store, rows_per_chunk

EMB_SCHEMA = "hwsi.patch_embeddings"
EMB_SCHEMA_VERSION = 1


@contextmanager
def patch_embedding_writer(
    path: str | Path, n: int, d: int
) -> Iterator[tuple[Callable[[int, np.ndarray], None], dict[str, Any]]]:
    """Stream ``[n, d]`` rows into a new store at ``path``; yields ``(write, attrs)``.

    ``write(start, rows)`` takes rows in order (one ~1 MB chunk is buffered); fill ``attrs``
    inside the block: they are written last, then the store is renamed into place.
    """
    attrs: dict[str, Any] = {}
    with atomic_output(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        chunk = max(1, min(max(n, 1), rows_per_chunk(d)))
        arr = root.create_array("emb", shape=(n, d), dtype="float16", chunks=(chunk, d))
        writer = RowWriter(arr)
        yield writer.write, attrs
        writer.close()
        root.attrs.update(
            {
                "schema": EMB_SCHEMA,
                "schema_version": EMB_SCHEMA_VERSION,
                "n_patches": n,
                "patch_dim": d,
                **attrs,
            }
        )


def read_embeddings(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``emb [N, D] float16`` and the attributes of a patch-embedding store."""
    root, attrs = open_store(
        path, EMB_SCHEMA, EMB_SCHEMA_VERSION, "patch-embedding store", "re-run extract_slide"
    )
    return root["emb"][...], attrs


def validate_embeddings(path: str | Path) -> list[str]:
    """Problems of a patch-embedding store: shape against its attributes, finite values."""
    root, attrs = open_store(path, EMB_SCHEMA, EMB_SCHEMA_VERSION, "patch-embedding store")
    if "emb" not in root:
        return ["array 'emb' missing"]
    emb = root["emb"][...]
    problems = []
    if emb.shape != (attrs.get("n_patches"), attrs.get("patch_dim")):
        problems.append(
            f"emb shape {emb.shape} != (n_patches, patch_dim) "
            f"({attrs.get('n_patches')}, {attrs.get('patch_dim')})"
        )
    if not np.isfinite(emb.astype(np.float32)).all():
        problems.append("emb has non-finite values")
    return problems
