"""Write pyramidal, tiled, JPEG-compressed RGB TIFFs that OpenSlide opens as ``generic-tiff``.

OpenSlide's generic-tiff driver only sees a pyramid when every level is its own top-level
page (not a SubIFD) and the reduced levels carry ``NewSubfileType = 1``; it refuses
stripped (untiled) files, and it derives ``openslide.mpp-x/y`` from the resolution tags.
No date tag is written, so output is byte-identical for identical pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from hwsi_model.atomic import atomic_output

TILE = 256
JPEG_QUALITY = 90
MIN_LEVELS = 3
SMALLEST_LONG_SIDE = 512  # keep halving while the long side is above this (level-0 px)


def downsample2(img: np.ndarray) -> np.ndarray:
    """2x2 box-filter downsample of an (H, W, 3) uint8 image; odd edges are replicated.

    Returns uint8 (ceil(H/2), ceil(W/2), 3).
    """
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    # Strided adds are much faster than a reshape-and-sum over interleaved axes.
    acc = img[0::2, 0::2].astype(np.uint16)
    acc += img[1::2, 0::2]
    acc += img[0::2, 1::2]
    acc += img[1::2, 1::2]
    acc += 2  # round to nearest
    return (acc >> 2).astype(np.uint8)


def pyramid_levels(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 plus successive /2 levels.

    Halves while the long side exceeds ``SMALLEST_LONG_SIDE`` px, and at least until
    ``MIN_LEVELS`` levels exist unless a level would drop below 64 px.
    """
    levels = [rgb]
    while True:
        h, w = levels[-1].shape[:2]
        if max(h, w) <= SMALLEST_LONG_SIDE and len(levels) >= MIN_LEVELS:
            break
        if min(h, w) < 128:
            break
        levels.append(downsample2(levels[-1]))
    return levels


def write_pyramid_tiff(
    path: Path, rgb: np.ndarray, mpp: float, description: str = "", quality: int = JPEG_QUALITY
) -> int:
    """Atomically write ``rgb`` ((H, W, 3) uint8, level 0 at ``mpp`` um/px) as a pyramid TIFF.

    The file is written to a hidden temporary name in the same folder and renamed into
    place when complete. Returns the number of pyramid levels.
    """
    levels = pyramid_levels(rgb)
    bigtiff = rgb.size > 2**31  # JPEG keeps files far smaller; this is a safe upper bound
    with atomic_output(Path(path)) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (mpp * 2**i)
            tif.write(
                np.ascontiguousarray(level),
                photometric="rgb",
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": quality},
                subfiletype=1 if i else 0,
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                description=description if i == 0 else None,
                metadata=None,
            )
    return len(levels)
