"""Zarr v3 helpers shared by the stores: opening with a schema check, small arrays in one chunk,
~1 MB chunking, and streaming rows of a 2-D array one full chunk at a time (bounded memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hwsi_model.errors import StoreError


def open_store(
    path: str | Path, schema: str, version: int, what: str, fix: str = ""
) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a finished store of ``schema`` v``version`` read-only; returns (group, attributes).

    Raises:
        StoreError: missing store, foreign schema (attributes are written last, so a store
            without them was never finished) or another schema version; ``fix`` is appended.
    """
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"{what} {path} does not exist or is not a Zarr group") from exc
    attrs = dict(root.attrs)
    if attrs.get("schema") != schema:
        raise StoreError(
            f"{path} is not a {schema} store (schema {attrs.get('schema')!r}): the {what} was "
            "never finished, or is foreign"
        )
    if attrs.get("schema_version") != version:
        raise StoreError(
            f"{what} {path} has schema version {attrs.get('schema_version')}, this hwsi reads "
            f"{version}" + (f"; {fix}" if fix else "")
        )
    return root, attrs


def put_array(group: zarr.Group, name: str, data: np.ndarray) -> None:
    """Write ``data`` as one chunk (small per-slide arrays: grids, offsets, cell tables)."""
    chunks = tuple(max(1, s) for s in data.shape)
    group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data


def rising(offsets: np.ndarray, end: int, what: str) -> list[str]:
    """Problems of an offsets array that must rise from 0 to ``end`` (empty: fine)."""
    off = offsets
    if off.ndim != 1 or len(off) == 0 or off[0] != 0 or off[-1] != end or (np.diff(off) < 0).any():
        return [f"{what} must rise from 0 to {end}"]
    return []


def rows_per_chunk(width: int, itemsize: int = 2, target_bytes: int = 1 << 20) -> int:
    """Rows of a ``[N, width]`` array that make a chunk of about ``target_bytes`` (1 MB)."""
    return max(1, target_bytes // max(1, width * itemsize))


class RowWriter:
    """Buffers rows written in order and flushes whole chunks to ``array``.

    Memory stays at one chunk plus the pending rows, whatever the slide's size.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.chunk_rows = array.chunks[0]
        self.next_row = 0  # first row not yet in the buffer
        self.flushed = 0  # rows already in the array
        self._buf: list[np.ndarray] = []

    def write(self, start: int, rows: np.ndarray) -> None:
        if start != self.next_row:
            raise ValueError(f"rows must arrive in order: expected {self.next_row}, got {start}")
        self._buf.append(np.asarray(rows, dtype=self.array.dtype))
        self.next_row += len(rows)
        pending = self.next_row - self.flushed
        if pending >= self.chunk_rows:
            data = np.concatenate(self._buf)
            n = (pending // self.chunk_rows) * self.chunk_rows
            self.array[self.flushed : self.flushed + n] = data[:n]
            self.flushed += n
            self._buf = [data[n:]] if n < len(data) else []

    def close(self) -> None:
        if self._buf:
            data = np.concatenate(self._buf)
            self.array[self.flushed : self.flushed + len(data)] = data
            self.flushed += len(data)
            self._buf = []
        if self.flushed != self.array.shape[0]:
            raise ValueError(f"wrote {self.flushed} rows of {self.array.shape[0]}")
