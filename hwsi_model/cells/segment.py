"""Segment the nuclei of a slide's patches (selected ones, or all tissue patches).

Patches are segmented in windows: a window covers one patch (selected mode) or a block of
neighbouring patches (all-tissue mode, bounded memory), plus a context margin so that nuclei
on a patch border are whole. Each nucleus is assigned to the patch that holds its centroid,
and only nuclei whose centroid lies in one of the window's own patches are kept, so every
nucleus is counted once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from hwsi_model.cells.detect import Nuclei, detect_nuclei
from hwsi_model.cells.normalize import Percentiles, slide_percentiles
from hwsi_model.data.stores.cells import CellTable
from hwsi_model.data.stores.tiles import TileGrid
from hwsi_model.slide.reader import SlideReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentParams:
    """Segmentation settings (see config ``cells``)."""

    mpp: float = 0.5  # um/px the StarDist model works at
    context_um: float = 16.0  # margin read around each window
    block: int = 4  # patches per window side in all-tissue mode
    prob_thresh: float | None = None  # None: the model's optimised thresholds
    nms_thresh: float | None = None
    min_hematoxylin: float = 0.03  # OD; detections paler than this are dropped (detect.py)
    norm_samples: int = 32  # tissue patches sampled for the slide's percentiles
    seed: int = 0


def estimate_percentiles(
    reader: SlideReader, tiles: TileGrid, params: SegmentParams
) -> Percentiles:
    """The slide's intensity percentiles from up to ``norm_samples`` random tissue patches."""
    n = len(tiles)
    rng = np.random.default_rng(params.seed)
    pick = np.sort(rng.choice(n, size=min(n, params.norm_samples), replace=False)) if n else []
    ps0 = tiles.geometry.patch_size_level0
    out = max(8, round(ps0 * reader.mpp / params.mpp))
    samples = [reader.read_box(*map(int, tiles.coords[i]), ps0, ps0, out, out) for i in pick]
    return slide_percentiles(samples)


def _windows(tiles: TileGrid, patches: np.ndarray, block: int) -> list[np.ndarray]:
    """Groups of patch indices segmented together (``block`` x ``block`` grid cells)."""
    if block <= 1:
        return [np.array([p]) for p in patches]
    cells = tiles.grid[patches] // block
    keys = cells[:, 0].astype(np.int64) * (int(cells[:, 1].max()) + 1) + cells[:, 1]
    order = np.argsort(keys, kind="stable")
    splits = np.flatnonzero(np.diff(keys[order])) + 1
    return [patches[g] for g in np.split(order, splits)]


def segment_window(
    reader: SlideReader,
    model,
    tiles: TileGrid,
    group: np.ndarray,
    percentiles: Percentiles,
    params: SegmentParams,
) -> tuple[np.ndarray, Nuclei]:
    """Segment one window; return (patch index per kept nucleus, nuclei in level-0 px)."""
    ps0 = tiles.geometry.patch_size_level0
    cells = tiles.grid[group]
    r0, c0 = cells.min(axis=0)
    r1, c1 = cells.max(axis=0) + 1
    margin0 = int(np.ceil(params.context_um / reader.mpp))
    x0, y0 = int(c0) * ps0 - margin0, int(r0) * ps0 - margin0
    w0, h0 = int(c1 - c0) * ps0 + 2 * margin0, int(r1 - r0) * ps0 + 2 * margin0
    scale = params.mpp / reader.mpp  # level-0 px per model px
    out_w, out_h = round(w0 / scale), round(h0 / scale)
    rgb = reader.read_box(x0, y0, w0, h0, out_w, out_h)
    nuc = detect_nuclei(model, rgb, percentiles, params.mpp, params.prob_thresh,
                        params.nms_thresh, params.min_hematoxylin)  # fmt: skip
    if len(nuc) == 0:
        return np.zeros(0, np.int64), nuc
    sx, sy = w0 / out_w, h0 / out_h
    to_l0 = np.array([sx, sy], np.float32)
    origin = np.array([x0, y0], np.float32)
    centroids = nuc.centroids * to_l0 + origin
    polygons = nuc.polygons * to_l0 + origin
    # Assign by centroid; keep only nuclei whose centroid is in one of this window's patches.
    cell_rc = np.floor(centroids[:, ::-1] / ps0).astype(np.int64)
    lookup = {(int(r), int(c)): int(p) for p, (r, c) in zip(group, cells, strict=True)}
    owner = np.array([lookup.get((int(r), int(c)), -1) for r, c in cell_rc], np.int64)
    keep = owner >= 0
    return owner[keep], Nuclei(centroids[keep], polygons[keep], nuc.features[keep], nuc.rejected)


def segment_patches(
    reader: SlideReader,
    model,
    tiles: TileGrid,
    patches: np.ndarray,
    params: SegmentParams,
    percentiles: Percentiles | None = None,
    progress: bool = True,
) -> tuple[CellTable, Percentiles, int]:
    """Segment ``patches`` (indices into ``tiles``) in windows of ``params.block`` patches;
    returns the cells, the slide's percentiles and the number of detections the haematoxylin
    check dropped (windows overlap by the context margin, so a drop may be counted twice)."""
    patches = np.unique(np.asarray(patches, np.int64))
    if percentiles is None:
        percentiles = estimate_percentiles(reader, tiles, params)
    n_rays = int(model.config.n_rays)
    owners, found, rejected = [], [], 0
    groups = _windows(tiles, patches, params.block) if len(patches) else []
    for group in tqdm(
        groups, desc=f"nuclei {reader.slide_id}", unit="window", disable=not progress
    ):
        owner, nuc = segment_window(reader, model, tiles, group, percentiles, params)
        owners.append(owner)
        found.append(nuc)
        rejected += nuc.rejected
    if found:
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        owner = owner[order]
        centroids = np.concatenate([n.centroids for n in found])[order]
        polygons = np.concatenate([n.polygons for n in found])[order]
        features = np.concatenate([n.features for n in found])[order]
    else:
        owner = np.zeros(0, np.int64)
        empty = Nuclei.empty(n_rays)
        centroids, polygons, features = empty.centroids, empty.polygons, empty.features
    # owner is sorted: each patch's cells are one run of it.
    counts = np.searchsorted(owner, patches, "right") - np.searchsorted(owner, patches, "left")
    table = CellTable(
        patches=patches,
        patch_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        patch_index=owner,
        centroids=centroids.astype(np.float32),
        polygons=polygons.astype(np.float32),
        features=features.astype(np.float32),
    )
    log.info(
        "slide '%s': %d nuclei in %d patches (%d pale detections dropped, haematoxylin < %.3f)",
        reader.slide_id, len(table), len(patches), rejected, params.min_hematoxylin,
    )  # fmt: skip
    return table, percentiles, rejected


__all__ = ["SegmentParams", "segment_patches"]
