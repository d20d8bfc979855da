"""The multi-scale cache: one Zarr v3 store per slide, the contract between extraction and training.

Layout of ``cache/{slide_id}.zarr`` (schema ``hwsi.cache`` v1). N patches, R regions of S x S
grid positions, K selected slots per region, M selected patches, C cells:

================  =====================  ==================================================
array             shape, dtype           meaning
================  =====================  ==================================================
``patch_emb``     ``[N, D_p] float16``   patch encoder embeddings, rows in tiles-store order
``patch_coords``  ``[N, 2] int64``       patch top-left (x, y), level-0 px
``patch_region``  ``[N] int64``          region of each patch
``region_grid``   ``[R, S, S] int64``    patch row at each grid position, -1 = background
``region_pos``    ``[R, 2] int64``       (row, col) of each region in the region grid
``selected``      ``[R, K] int64``       diagnostically relevant patches, -1 = padding
``cell_emb``      ``[C, D_c] float16``   pooled token features ++ standardised morphometrics
``cell_pos``      ``[C, 2] float32``     nucleus centroid inside its patch, (x, y) in 0..1
``cell_offsets``  ``[M + 1] int64``      cells of selected patch m (region by region, in the
                                         order of ``selected``, skipping -1)
================  =====================  ==================================================

Embedding arrays are chunked at about 1 MB and sharded (up to 64 chunks per shard), so a slide
is read with a handful of requests. Attributes record encoder ids and checkpoint hashes, mpp,
sizes, the selection rule, config hash, schema and software versions; ``complete: true`` is
written last.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.zarr_io import rows_per_chunk
from hwsi_model.errors import StoreError

CACHE_SCHEMA = "hwsi.cache"
CACHE_SCHEMA_VERSION = 1

ARRAYS = (
    "patch_emb",
    "patch_coords",
    "patch_region",
    "region_grid",
    "region_pos",
    "selected",
    "cell_emb",
    "cell_pos",
    "cell_offsets",
)
_DTYPES = {
    "patch_emb": np.float16,
    "patch_coords": np.int64,
    "patch_region": np.int64,
    "region_grid": np.int64,
    "region_pos": np.int64,
    "selected": np.int64,
    "cell_emb": np.float16,
    "cell_pos": np.float32,
    "cell_offsets": np.int64,
}


def _layout(shape: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(chunks, shards): ~1 MB chunks along axis 0, up to 64 chunks per shard."""
    row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    rows = max(1, min(max(shape[0], 1), rows_per_chunk(row, itemsize)))
    chunks = (rows, *(max(1, s) for s in shape[1:]))
    n_chunks = max(1, math.ceil(shape[0] / rows))
    shards = (rows * min(64, n_chunks), *chunks[1:])
    return chunks, shards


def write_cache(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write one slide's cache atomically (temporary name, renamed when complete)."""
    import hwsi_model

    missing = [a for a in ARRAYS if a not in arrays]
    if missing:
        raise ValueError(f"cache arrays missing: {missing}")
    meta = {
        "schema": CACHE_SCHEMA,
        "schema_version": CACHE_SCHEMA_VERSION,
        "hwsi_version": hwsi_model.__version__,
        "zarr_version": zarr.__version__,
        **attrs,
    }
    with atomic_output(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in ARRAYS:
            data = np.ascontiguousarray(arrays[name], dtype=_DTYPES[name])
            chunks, shards = _layout(data.shape, data.dtype.itemsize)
            arr = root.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards
            )
            if data.size:
                arr[...] = data
        root.attrs.update({**meta, "complete": True})  # last: the finished marker


def _open_checked(path: Path) -> tuple[zarr.Group | None, dict, list[str]]:
    """The store, its attributes and the problems found before reading any array."""
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None, {}, ["missing or not a Zarr group"]
    attrs = dict(root.attrs)
    if attrs.get("schema") != CACHE_SCHEMA:
        return root, attrs, [f"not a cache store (schema {attrs.get('schema')!r})"]
    if attrs.get("schema_version") != CACHE_SCHEMA_VERSION:
        v = attrs.get("schema_version")
        return root, attrs, [f"schema version {v}, expected {CACHE_SCHEMA_VERSION}"]
    if attrs.get("complete") is not True:
        return root, attrs, ["incomplete (no finished marker): the writing job did not finish"]
    return root, attrs, [f"array '{a}' missing" for a in ARRAYS if a not in root]


def validate_cache(path: str | Path) -> list[str]:
    """Problems of a cache store (empty list: valid). Checks what training relies on."""
    root, attrs, problems = _open_checked(Path(path))
    if problems:
        return problems
    return check_arrays({name: root[name][...] for name in ARRAYS}, attrs)


def check_arrays(a: dict[str, np.ndarray], attrs: dict) -> list[str]:
    """Problems of a cache's arrays and attributes, read already (see :func:`validate_cache`)."""
    problems: list[str] = []
    n, d = a["patch_emb"].shape
    r, s, s2 = a["region_grid"].shape
    if s != s2:
        problems.append(f"region_grid is not square: {a['region_grid'].shape}")
    if a["patch_coords"].shape != (n, 2) or a["patch_region"].shape != (n,):
        problems.append("patch_coords/patch_region do not match patch_emb rows")
    if a["region_pos"].shape != (r, 2) or a["selected"].shape[0] != r:
        problems.append("region_pos/selected do not have one row per region")
    if d != attrs.get("patch_dim", d):
        problems.append(f"patch_emb width {d} != attrs patch_dim {attrs.get('patch_dim')}")
    if not np.isfinite(a["patch_emb"].astype(np.float32)).all():
        problems.append("patch_emb has non-finite values")
    grid = a["region_grid"]
    if grid.size and (grid.max() >= n or grid.min() < -1):
        problems.append("region_grid indices out of range")
    else:
        for ri in range(r):
            rows = grid[ri][grid[ri] >= 0]
            if len(rows) and (a["patch_region"][rows] != ri).any():
                problems.append(f"region {ri}: region_grid lists patches of another region")
                break
    sel = a["selected"]
    flat = sel[sel >= 0]
    if len(flat) and (flat.max() >= n):
        problems.append("selected indices out of range")
    elif len(flat):
        owner = np.repeat(np.arange(r), (sel >= 0).sum(axis=1))
        if (a["patch_region"][flat] != owner).any():
            problems.append("a selected patch is not in its region")
    m, c = len(flat), a["cell_emb"].shape[0]
    off = a["cell_offsets"]
    if off.shape != (m + 1,) or off[0] != 0 or off[-1] != c or (np.diff(off) < 0).any():
        problems.append(f"cell_offsets must rise from 0 to {c} over {m} selected patches")
    if a["cell_pos"].shape != (c, 2):
        problems.append("cell_pos does not have one row per cell")
    elif c and ((a["cell_pos"] < 0) | (a["cell_pos"] > 1)).any():
        problems.append("a cell centroid lies outside its patch (cell_pos not in 0..1)")
    return problems


def read_cache(path: str | Path, validate: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays and attributes of a cache store.

    Raises:
        StoreError: naming the first problem when the store fails :func:`validate_cache`.
    """
    if not validate:
        root = zarr.open_group(str(path), mode="r")
        return {name: root[name][...] for name in ARRAYS}, dict(root.attrs)
    root, attrs, problems = _open_checked(Path(path))
    arrays: dict[str, np.ndarray] = {}
    if not problems:  # each array is read once and checked in memory
        arrays = {name: root[name][...] for name in ARRAYS}
        problems = check_arrays(arrays, attrs)
    if problems:
        raise StoreError(f"cache {path} is invalid: {problems[0]}")
    return arrays, attrs


def slide_tensors(arrays: dict[str, np.ndarray], attrs: dict):
    """:class:`hwsi_model.model.batch.SlideTensors` of arrays already read (:func:`read_cache`)."""
    import torch

    from hwsi_model.model.batch import SlideTensors

    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return SlideTensors(
        patch_emb=t["patch_emb"],
        region_grid=t["region_grid"],
        region_pos=t["region_pos"],
        selected=t["selected"],
        cell_emb=t["cell_emb"],
        cell_pos=t["cell_pos"],
        cell_offsets=t["cell_offsets"],
        slide_id=attrs.get("slide_id", ""),
    )


def read_slide_tensors(path: str | Path):
    """One slide's tensors for training (:class:`hwsi_model.model.batch.SlideTensors`)."""
    return slide_tensors(*read_cache(path))


def open_cohort_dask(paths: list[str | Path], name: str = "patch_emb"):
    """Lazily concatenate one array over many caches as a Dask array (for cohort analyses)."""
    import dask.array as da

    parts = [da.from_zarr(zarr.open_array(str(Path(p) / name), mode="r")) for p in paths]
    return da.concatenate(parts, axis=0) if parts else None
