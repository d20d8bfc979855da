"""Nucleus detection on one image with StarDist, and per-nucleus measurements.

Images here are already at the model's resolution (``mpp`` um/px). Coordinates are (x, y)
pixels of the image given; callers map them to level-0 or input-image pixels.

Haematoxylin check: a nucleus is stained by haematoxylin, so a detection whose mean
haematoxylin optical density inside its outline (Ruifrok-Johnston colour deconvolution,
:func:`skimage.color.rgb2hed`, channel H, measured on the unnormalised RGB) is below
``min_hematoxylin`` is dropped. StarDist sees contrast-normalised images and, on eosin-only
stroma or near-white background stretched to full range, finds "nuclei" in texture; those
have an H density near 0, real nuclei 0.07-0.2 on the H&E scans we measured
(``benchmarks/RESULTS.md``, "Nuclei only where there are nuclei"). Default 0.03.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import measure

from hwsi_model.cells.normalize import Percentiles
from hwsi_model.cells.stain import hematoxylin_density
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
    rejected: int = 0  # detections dropped by the haematoxylin check

    def __len__(self) -> int:
        return int(self.centroids.shape[0])

    def take(self, keep: np.ndarray) -> Nuclei:
        return Nuclei(self.centroids[keep], self.polygons[keep], self.features[keep], self.rejected)

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
    min_hematoxylin: float = 0.0,
) -> Nuclei:
    """Run StarDist on ``rgb`` (``[H, W, 3] uint8`` at ``mpp`` um/px) and measure each nucleus;
    detections whose mean haematoxylin density is below ``min_hematoxylin`` (OD) are dropped
    (module doc; ``Nuclei.rejected`` counts them).

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
    hema = hematoxylin_density(rgb)
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
    stained = feats[:, FEATURES.index("hematoxylin")] >= min_hematoxylin
    found = Nuclei(points[:, ::-1].copy(), polygons, feats).take(keep & stained)
    found.rejected = int((keep & ~stained).sum())
    return found
