"""Patches of one slide as a PyTorch dataset of contiguous row ranges.

Items are consecutive slices of the tiles store's rows (region by region, at most
``max_patches`` per item), so the loader hands back embeddings in row order and the writer
can stream them to Zarr. Each worker opens its own slide reader on first use: an OpenSlide
handle is never pickled into a worker.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from hwsi_model.data.stores.tiles import TileGrid
from hwsi_model.slide.patches import iter_patches
from hwsi_model.slide.reader import SlideReader, open_slide


def row_ranges(region_offsets: np.ndarray, max_patches: int) -> list[tuple[int, int]]:
    """Split each region's rows into consecutive ranges of at most ``max_patches`` rows."""
    out = []
    for r in range(len(region_offsets) - 1):
        a, b = int(region_offsets[r]), int(region_offsets[r + 1])
        out.extend((s, min(s + max_patches, b)) for s in range(a, b, max_patches))
    return out


class SlidePatchDataset(Dataset):
    """Item ``i``: ``(start, end, patches)`` with ``patches`` ``[end-start, P, P, 3] uint8``.

    Args:
        slide_path, slide_id, mpp_override: how to open the slide (in each worker).
        tiles: the slide's patch grid (level-0 coordinates, patch sizes).
        max_patches: rows per item (a band of a region: neighbouring patches, read in blocks).
        rows: optional subset of rows to serve instead of all (e.g. the selected patches);
            items are then single consecutive runs of that subset.
    """

    def __init__(
        self,
        slide_path: str,
        slide_id: str,
        tiles: TileGrid,
        mpp_override: float | None = None,
        max_patches: int = 64,
        rows: np.ndarray | None = None,
    ) -> None:
        self.slide_path, self.slide_id, self.mpp_override = slide_path, slide_id, mpp_override
        self.coords = tiles.coords
        self.ps0 = tiles.geometry.patch_size_level0
        self.ps = tiles.geometry.patch_size
        if rows is None:
            self.items = row_ranges(tiles.region_offsets, max_patches)
            self.rows = None
        else:
            self.rows = np.asarray(rows, np.int64)
            n = len(self.rows)
            self.items = [(s, min(s + max_patches, n)) for s in range(0, n, max_patches)]
        self._reader: SlideReader | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _get_reader(self) -> SlideReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = open_slide(self.slide_path, self.slide_id, self.mpp_override)
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None  # opened again in the worker
        return state

    def __getitem__(self, i: int) -> tuple[int, int, torch.Tensor]:
        start, end = self.items[i]
        rows = np.arange(start, end) if self.rows is None else self.rows[start:end]
        out = np.empty((end - start, self.ps, self.ps, 3), np.uint8)
        for j, patch in iter_patches(self._get_reader(), self.coords[rows], self.ps0, self.ps):
            out[j] = patch
        return start, end, torch.from_numpy(out)
