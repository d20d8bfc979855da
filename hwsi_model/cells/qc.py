"""QC picture of a slide's nuclei: a few segmented patches with their outlines."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from hwsi_model.data.stores.cells import CellTable
from hwsi_model.data.stores.tiles import TileGrid
from hwsi_model.slide.reader import SlideReader


def render_cells_qc(
    reader: SlideReader, tiles: TileGrid, table: CellTable, n_patches: int = 6, seed: int = 0
) -> Image.Image:
    """A row of up to ``n_patches`` segmented patches (most nuclei first) with outlines."""
    counts = np.diff(table.patch_offsets)
    order = np.argsort(-counts, kind="stable")[:n_patches]
    ps = tiles.geometry.patch_size
    ps0 = tiles.geometry.patch_size_level0
    panels = []
    for p in order:
        idx = int(table.patches[p])
        x, y = map(int, tiles.coords[idx])
        img = Image.fromarray(reader.read_box(x, y, ps0, ps0, ps, ps))
        draw = ImageDraw.Draw(img)
        s = ps / ps0
        for c in range(table.patch_offsets[p], table.patch_offsets[p + 1]):
            pts = [((px - x) * s, (py - y) * s) for px, py in table.polygons[c]]
            draw.polygon(pts, outline=(0, 230, 0))
        draw.text((3, 3), f"patch {idx}: {counts[p]} nuclei", fill=(0, 0, 0))
        panels.append(img)
    if not panels:
        img = Image.new("RGB", (ps, ps), (255, 255, 255))
        ImageDraw.Draw(img).text((5, 5), "no segmented patches", fill=(0, 0, 0))
        return img
    out = Image.new("RGB", (ps * len(panels), ps), (255, 255, 255))
    for i, panel in enumerate(panels):
        out.paste(panel, (i * ps, 0))
    return out
