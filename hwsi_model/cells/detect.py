"""Nucleus detection on one image with StarDist, and per-nucleus measurements.

Images here are already at the model's resolution (``mpp`` um/px). Coordinates are (x, y)
pixels of the image given; callers map them to level-0 or input-image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import color, measure

from hwsi_model.cells.normalize import Percentiles
from hwsi_model.data.stores.cells import FEATURES


@dataclass
class Nuclei:
    """Nuclei found in one image (n nuclei, R rays).

    Attributes:
        centroids: ``[n, 2] float32`` (x, y) px (StarDist's star centres).
        polygons: ``[n, R, 2] float32`` (x, y) px of each star-convex outline.
        features: ``[n, len(FEATURES)] float32`` (see :data:`FEATURES`).
    """

    centroids: np.ndarray
    polygons: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.centroids.shape[0])

    def take(self, keep: np.ndarray) -> Nuclei:
        return Nuclei(self.centroids[keep], self.polygons[keep], self.features[keep])

    @classmethod
    def empty(cls, n_rays: int) -> Nuclei:
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros((0, n_rays, 2), np.float32),
            np.zeros((0, len(FEATURES)), np.float32),
        )


def detect_nuclei(
    model,
    rgb: np.ndarray,
    percentiles: Percentiles,
    mpp: float,
    prob_thresh: float | None = None,
    nms_thresh: float | None = None,
) -> Nuclei:
    """Run StarDist on ``rgb`` (``[H, W, 3] uint8`` at ``mpp`` um/px) and measure each nucleus.

    Large images are predicted in tiles (StarDist's ``n_tiles``) so memory stays bounded.
    """
    n_rays = int(model.config.n_rays)
    h, w = rgb.shape[:2]
    n_tiles = (max(1, int(np.ceil(h / 1024))), max(1, int(np.ceil(w / 1024))), 1)
    labels, details = model.predict_instances(
        percentiles.apply(rgb),
        prob_thresh=prob_thresh,
        nms_thresh=nms_thresh,
        n_tiles=n_tiles,
        show_tile_progress=False,
    )
    points = np.asarray(details["points"], np.float32).reshape(-1, 2)  # (y, x)
    if len(points) == 0:
        return Nuclei.empty(n_rays)
    coord = np.asarray(details["coord"], np.float32)  # [n, 2 (y, x), R]
    polygons = np.stack([coord[:, 1, :], coord[:, 0, :]], axis=-1)
    prob = np.asarray(details["prob"], np.float32)
    hema = color.rgb2hed(rgb)[..., 0]
    props = {p.label: p for p in measure.regionprops(labels, intensity_image=hema)}
    feats = np.full((len(points), len(FEATURES)), np.nan, np.float32)
    for i in range(len(points)):
        p = props.get(i + 1)  # StarDist labels instance i as i + 1
        if p is None:  # fully covered by a neighbour's polygon
            continue
        feats[i] = (
            p.area * mpp * mpp,
            p.perimeter * mpp,
            p.eccentricity,
            p.solidity,
            prob[i],
            p.intensity_mean,
        )
    keep = ~np.isnan(feats[:, 0])
    return Nuclei(points[:, ::-1].copy(), polygons, feats).take(keep)
