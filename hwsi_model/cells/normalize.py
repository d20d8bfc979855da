"""Per-slide intensity normalisation for StarDist.

Per-tile percentiles stretch an empty or stroma-only tile until noise looks like nuclei; one
pair of percentiles per slide, from its tissue, keeps the contrast of every tile comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import color

from hwsi_model.cells.stain import hematoxylin_density


@dataclass(frozen=True)
class Percentiles:
    """Per-channel intensity range ``lo``/``hi`` (``[3] float32``) mapped to 0..1."""

    lo: np.ndarray
    hi: np.ndarray
    p_lo: float
    p_hi: float

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``[H, W, 3] uint8 -> [H, W, 3] float32`` scaled so that lo -> 0 and hi -> 1."""
        return ((rgb.astype(np.float32) - self.lo) / np.maximum(self.hi - self.lo, 1e-3)).astype(
            np.float32
        )

    def to_attrs(self) -> dict:
        return {
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "p_lo": self.p_lo,
            "p_hi": self.p_hi,
        }


def tissue_pixels(rgb: np.ndarray, min_saturation: float = 0.07) -> np.ndarray:
    """Pixels of ``[H, W, 3] uint8`` that are stained (saturation above glass) -> ``[n, 3]``."""
    sat = color.rgb2hsv(rgb)[..., 1]
    return rgb[sat > min_saturation]


def slide_percentiles(
    samples: list[np.ndarray], p_lo: float = 1.0, p_hi: float = 99.8, max_pixels: int = 2_000_000
) -> Percentiles:
    """Percentiles per channel over the tissue pixels of sample images of one slide.

    Args:
        samples: ``[H, W, 3] uint8`` images from the slide's tissue (e.g. 32 random patches).
        p_lo, p_hi: percentiles (csbdeep's defaults for StarDist are 1 and 99.8).
        max_pixels: cap on pixels used (subsampled deterministically).

    Falls back to all pixels when too few are stained (a nearly empty slide).
    """
    pix = [tissue_pixels(s) for s in samples]
    stained = np.concatenate(pix) if pix else np.zeros((0, 3), np.uint8)
    if len(stained) < 1000:
        stained = np.concatenate([s.reshape(-1, 3) for s in samples]) if samples else stained
    if len(stained) == 0:
        return Percentiles(np.zeros(3, np.float32), np.full(3, 255, np.float32), p_lo, p_hi)
    if len(stained) > max_pixels:
        stained = stained[:: int(np.ceil(len(stained) / max_pixels))]
    lo = np.percentile(stained, p_lo, axis=0).astype(np.float32)
    hi = np.percentile(stained, p_hi, axis=0).astype(np.float32)
    return Percentiles(lo, hi, p_lo, p_hi)


#: Haematoxylin optical density below which a pixel is not "dark" (no nucleus stain).
DARK_HEMATOXYLIN = 0.03


def image_percentiles(rgb: np.ndarray) -> Percentiles:
    """Percentiles for one image segmented on its own (``hwsi segment``): those of its tissue,
    as for a slide, unless it holds no haematoxylin-dark pixels (99.5th percentile of the H
    optical density below :data:`DARK_HEMATOXYLIN`: blank glass, eosin-only stroma). Such an
    image is left unstretched (0..255): stretched to full range, its texture looks like nuclei.
    """
    if float(np.percentile(hematoxylin_density(rgb), 99.5)) < DARK_HEMATOXYLIN:
        return Percentiles(np.zeros(3, np.float32), np.full(3, 255, np.float32), 0.0, 100.0)
    return slide_percentiles([rgb])
