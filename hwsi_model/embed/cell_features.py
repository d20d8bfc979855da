"""Per-nucleus embeddings: encoder tokens pooled inside the nucleus + standardised morphometrics."""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon as fill_polygon

from hwsi_model.data.stores.cells import FEATURES

# Fixed reference statistics (typical H&E nuclei at 20x), not per slide: per-slide z-scores
# would erase slide-level differences of nuclear size and shape, which are diagnostic.
# Each feature f becomes (transform(f) - centre) / scale.
_MORPH_REF = {
    "area_um2": (np.log, np.log(40.0), 0.6),
    "perimeter_um": (np.log, np.log(25.0), 0.4),
    "eccentricity": (None, 0.6, 0.2),
    "solidity": (None, 0.9, 0.05),
    "prob": (None, 0.7, 0.2),
    "hematoxylin": (None, 0.1, 0.05),
}


def standardise_morphometrics(features: np.ndarray) -> np.ndarray:
    """``[C, 6]`` raw features (:data:`FEATURES` order) -> ``[C, 6] float32`` standardised."""
    out = np.empty(features.shape, np.float32)
    for j, name in enumerate(FEATURES):
        fn, centre, scale = _MORPH_REF[name]
        col = features[:, j].astype(np.float64)
        if fn is not None:
            col = fn(np.maximum(col, 1e-6))
        out[:, j] = (col - centre) / scale
    return np.nan_to_num(out)


def pool_tokens(
    tokens: np.ndarray, polygons: np.ndarray, centroids: np.ndarray, patch_px: int
) -> np.ndarray:
    """Average the token vectors under each nucleus, weighted by the nucleus' area per token.

    Args:
        tokens: ``[h, w, Dt]`` token map of one patch.
        polygons: ``[n, R, 2]`` (x, y) outlines in patch px (0..patch_px).
        centroids: ``[n, 2]`` (x, y) in patch px; used when a nucleus is smaller than a token.
        patch_px: patch side in px.

    Returns:
        ``[n, Dt] float32``.
    """
    h, w, dt = tokens.shape
    flat = tokens.reshape(h * w, dt).astype(np.float32)
    out = np.empty((len(polygons), dt), np.float32)
    cell_h, cell_w = patch_px / h, patch_px / w
    # Token cells' pixel edges (the token grid need not divide the patch evenly).
    ey = np.round(np.linspace(0, patch_px, h + 1)).astype(int)[:-1]
    ex = np.round(np.linspace(0, patch_px, w + 1)).astype(int)[:-1]
    for i, poly in enumerate(polygons):
        mask = np.zeros((patch_px, patch_px), np.float32)
        rr, cc = fill_polygon(poly[:, 1], poly[:, 0], shape=mask.shape)
        mask[rr, cc] = 1.0
        weights = np.add.reduceat(np.add.reduceat(mask, ey, axis=0), ex, axis=1).reshape(-1)
        if weights.sum() <= 0:
            ty = min(h - 1, int(centroids[i, 1] // cell_h))
            tx = min(w - 1, int(centroids[i, 0] // cell_w))
            out[i] = flat[ty * w + tx]
        else:
            out[i] = weights @ flat / weights.sum()
    return out
