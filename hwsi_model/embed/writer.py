"""Stream rows of a 2-D float16 array into Zarr, one full chunk at a time (bounded memory)."""

from __future__ import annotations

import numpy as np
import zarr


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
