"""QC picture of a slide: thumbnail, tissue outline, patch grid and region borders."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from hwsi_model.data.stores.tiles import TileGrid
from hwsi_model.tiling.tissue import TissueMask

TISSUE_COLOUR = (0, 170, 0)
PATCH_COLOUR = (40, 90, 220)
REGION_COLOUR = (230, 120, 0)


def render_tiling_qc(
    thumb: np.ndarray, tissue: TissueMask, tiles: TileGrid, title: str = ""
) -> Image.Image:
    """Draw the tissue outline (green), kept patches (blue) and regions (orange) on the thumbnail.

    Args:
        thumb: ``[H, W, 3] uint8`` thumbnail at ``tissue.mpp`` um/px (same frame as the mask).
        tissue: the tissue mask.
        tiles: the patch grid (level-0 coordinates).
        title: text drawn in the top-left corner.
    """
    rgb = thumb.copy()
    if tissue.mask.shape == rgb.shape[:2] and tissue.mask.any():
        edge = find_boundaries(tissue.mask, mode="outer")
        rgb[edge] = TISSUE_COLOUR
    # Upscale small thumbnails so the grid stays readable.
    zoom = max(1, int(np.ceil(800 / max(rgb.shape[:2]))))
    img = Image.fromarray(rgb)
    if zoom > 1:
        img = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    s = zoom * tissue.slide_mpp / tissue.mpp  # QC px per level-0 px
    ps = tiles.geometry.patch_size_level0 * s
    for x, y in tiles.coords:
        draw.rectangle([x * s, y * s, x * s + ps, y * s + ps], outline=PATCH_COLOUR, width=1)
    rs = tiles.geometry.region_size_level0 * s
    for x, y in tiles.region_coords:
        draw.rectangle([x * s, y * s, x * s + rs, y * s + rs], outline=REGION_COLOUR, width=3)
    label = f"{title}  patches={len(tiles)} regions={tiles.n_regions}".strip()
    draw.rectangle([0, 0, 8 + 6 * len(label), 16], fill=(255, 255, 255))
    draw.text((4, 2), label, fill=(0, 0, 0))
    return img
