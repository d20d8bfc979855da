"""Fast patch reading: one OpenSlide call per block of neighbouring patches, cut in memory.

Per-patch ``read_region`` calls pay OpenSlide's per-call overhead and decode every JPEG tile
under a patch border twice; reading blocks of ``block x block`` grid cells amortises both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hwsi_model.slide.reader import SlideReader


def iter_patches(
    reader: SlideReader,
    coords: np.ndarray,
    patch_size_level0: int,
    patch_size: int,
    block: int = 8,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, patch)`` for every patch, reading grouped blocks.

    Args:
        reader: an open slide.
        coords: ``[N, 2]`` top-left (x, y) of grid-aligned patches, level-0 px.
        patch_size_level0: patch side at level 0, px.
        patch_size: output patch side, px (the target resolution).
        block: grid cells per block side.

    Yields:
        The patch's row in ``coords`` and its pixels, ``[patch_size, patch_size, 3] uint8``.
        Order is block by block, not the order of ``coords``.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if len(coords) == 0:
        return
    ps0, ps = int(patch_size_level0), int(patch_size)
    cells = coords // ps0
    keys = (cells[:, 1] // block) * (int(cells[:, 0].max()) // block + 1) + cells[:, 0] // block
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for group in np.split(order, bounds):
        c0 = cells[group].min(axis=0)
        c1 = cells[group].max(axis=0) + 1
        nx, ny = (c1 - c0).tolist()
        img = reader.read_box(
            int(c0[0] * ps0), int(c0[1] * ps0), nx * ps0, ny * ps0, nx * ps, ny * ps
        )
        for i in group:
            ox, oy = ((cells[i] - c0) * ps).tolist()
            yield int(i), img[oy : oy + ps, ox : ox + ps]
