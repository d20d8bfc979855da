"""Stain separation of H&E images (Ruifrok-Johnston colour deconvolution, scikit-image).

``hematoxylin_density`` is the optical density of the haematoxylin stain per pixel (0 on glass
and on eosin-only tissue, about 0.07-0.2 inside nuclei of the H&E scans we measured);
``remove_hematoxylin`` gives the same tissue as if stained by eosin alone: the nucleus-free
training tiles of the demo StarDist model and the eosin-only test images come from it.
"""

from __future__ import annotations

import numpy as np
from skimage import color


def hematoxylin_density(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8 -> [H, W] float`` haematoxylin optical density."""
    return color.rgb2hed(rgb)[..., 0]


def blank_glass(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """``[H, W, 3] uint8`` near-white glass with scanner noise (about 242 +- 3 per channel)."""
    glass = np.random.default_rng(seed).normal(242.0, 3.0, shape)
    return np.clip(glass, 0, 255).astype(np.uint8)


def remove_hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8 -> [H, W, 3] uint8``: the image with its haematoxylin taken out."""
    hed = color.rgb2hed(rgb)
    hed[..., 0] = 0.0
    return (np.clip(color.hed2rgb(hed), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
