"""Evidence heatmaps on a tiny synthetic slide: sizes, and hot pixels where the scores are high."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hwsi_model.evaluation.heatmaps import (
    cell_polygons,
    hot_overlap,
    patch_score_map,
    render_evidence,
    render_top_patches,
    slide_thumbnail,
)

W, H, PS = 1024, 768, 128  # slide px, patch px (level 0); 8 x 6 patches, regions of 2 x 2
VIRIDIS_TOP = np.array([253, 231, 37])


def _cache() -> tuple[dict[str, np.ndarray], dict]:
    ys, xs = np.mgrid[0:H:PS, 0:W:PS]
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)  # [48, 2]
    region = (coords[:, 1] // (2 * PS)) * 4 + coords[:, 0] // (2 * PS)  # 4 x 3 regions
    selected = np.full((12, 2), -1, np.int64)
    for r in range(12):
        rows = np.flatnonzero(region == r)
        selected[r, : min(2, len(rows))] = rows[:2]
    m = int((selected >= 0).sum())
    offsets = np.arange(m + 1, dtype=np.int64) * 2  # two cells per selected patch
    pos = np.tile(np.array([[0.25, 0.25], [0.75, 0.75]], np.float32), (m, 1))
    arrays = {
        "patch_coords": coords,
        "patch_region": region.astype(np.int64),
        "selected": selected,
        "cell_offsets": offsets,
        "cell_pos": pos,
    }
    return arrays, {"patch_size_level0": PS}


def _hot_scores(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High scores in the bottom-right 2 x 2 patches (one region), low elsewhere."""
    hot = (coords[:, 0] >= W - 2 * PS) & (coords[:, 1] >= H - 2 * PS)
    rng = np.random.default_rng(0)
    return np.where(
        hot, 1.0 + rng.uniform(0, 0.1, len(coords)), rng.uniform(0, 0.2, len(coords))
    ), hot


@pytest.fixture
def slide(make_slide) -> Path:
    return make_slide("ev", W, H, mpp=0.5)


def _hot_pixels(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return np.abs(rgb - VIRIDIS_TOP).sum(-1) < 60


def test_thumbnail_and_score_map(slide: Path) -> None:
    thumb, scale = slide_thumbnail(slide, max_px=256)
    assert thumb.shape == (192, 256, 3) and scale == pytest.approx(0.25)
    coords = np.array([[0, 0], [128, 0]])
    smap = patch_score_map(np.array([1.0, 2.0]), coords, 128, scale, thumb.shape[:2])
    assert np.isnan(smap[40:, :]).all()
    assert (smap[:32, :32] == 1).all() and (smap[:32, 32:64] == 2).all()
    with pytest.raises(ValueError):
        patch_score_map(np.zeros(3), coords, 128, scale, thumb.shape[:2])


def test_render_evidence_hot_pixels_where_scores_are_high(slide: Path, tmp_path: Path) -> None:
    arrays, attrs = _cache()
    patch, _ = _hot_scores(arrays["patch_coords"])
    region = np.zeros(12)
    region[11] = 1.0  # the bottom-right region
    evidence = {
        "region": torch.tensor(region),
        "patch": torch.tensor(patch, dtype=torch.float16),
        "cell": np.linspace(0, 1, len(arrays["cell_pos"])),
    }
    paths = render_evidence(
        slide, arrays, attrs, evidence, tmp_path / "ev", prefix="q0_", top_k=3,
        max_px=256, cmap="viridis", alpha=1.0, legend=False,
    )  # fmt: skip
    assert {p.name for p in paths.values()} == {
        "q0_region.png",
        "q0_patch.png",
        "q0_top_patches.png",
    }
    box = np.zeros((192, 256), bool)
    box[128:192, 192:256] = True  # the hot patches in thumbnail px (scale 1/4)
    for key in ("region", "patch"):
        img = Image.open(paths[key])
        assert img.size == (256, 192)
        hotpx = _hot_pixels(paths[key])
        assert hotpx.sum() > 0.8 * box.sum(), key
        assert hotpx[~box].sum() == 0, key  # nothing hot outside the high scores
    top = Image.open(paths["top_patches"])
    assert top.size == (3 * 256, 256)
    # with the colour bar: the same picture but for the bottom-left corner
    with_bar = render_evidence(
        slide, arrays, attrs, evidence, tmp_path / "bar", max_px=256, cmap="viridis", alpha=1.0
    )
    a = np.asarray(Image.open(with_bar["patch"]).convert("RGB"))
    b = np.asarray(Image.open(paths["patch"]).convert("RGB"))
    differs = (a != b).any(-1)
    assert differs[160:, :80].any() and not differs[:150, :].any() and not differs[:, 140:].any()


def test_top_patches_order_and_cell_colours(slide: Path, tmp_path: Path) -> None:
    arrays, _ = _cache()
    patch, hot = _hot_scores(arrays["patch_coords"])
    n_cells = len(arrays["cell_pos"])
    cell = np.zeros(n_cells)
    cell[-1] = 1.0  # the last cell (of the last selected patch) is the most relevant
    png, shown = render_top_patches(
        slide, arrays["patch_coords"], PS, patch, arrays["selected"], arrays["cell_offsets"],
        cell, arrays["cell_pos"], tmp_path / "top.png", k=2, crop_px=128, cmap="viridis",
    )  # fmt: skip
    assert Image.open(png).size == (256, 128)
    sel = arrays["selected"][arrays["selected"] >= 0]
    expected = sel[np.argsort(-patch[sel], kind="stable")[:2]]
    assert shown == expected.tolist() and all(hot[r] for r in shown)
    # the last selected patch is in the hot region: its second nucleus is drawn in the top colour
    last = int(sel[-1])
    assert last in shown
    panel = shown.index(last)
    hotpx = _hot_pixels(png)[:, panel * 128 : (panel + 1) * 128]
    ys, xs = np.nonzero(hotpx)
    assert len(ys) > 10
    assert np.hypot(xs.mean() - 96, ys.mean() - 96) < 6  # around the centroid (0.75, 0.75)


def test_outlines_from_a_cells_store(slide: Path, tmp_path: Path) -> None:
    from hwsi_model.data.stores.cells import CellTable, write_cells

    arrays, _ = _cache()
    sel = arrays["selected"][arrays["selected"] >= 0]
    patches = np.sort(sel)
    square = np.array([[-8, -8], [8, -8], [8, 8], [-8, 8]], np.float32)
    cents, polys = [], []
    for p in patches:
        x, y = arrays["patch_coords"][p]
        for fx in (0.25, 0.75):
            c = np.array([x + fx * PS, y + fx * PS], np.float32)
            cents.append(c)
            polys.append(square + c)
    n = len(cents)
    table = CellTable(
        patches=patches.astype(np.int64),
        patch_offsets=np.arange(len(patches) + 1, dtype=np.int64) * 2,
        patch_index=np.repeat(patches, 2).astype(np.int64),
        centroids=np.array(cents),
        polygons=np.array(polys),
        features=np.zeros((n, 6), np.float32),
    )
    store = tmp_path / "cells.zarr"
    write_cells(store, table, {})
    outlines = cell_polygons(store, sel)
    assert len(outlines) == len(sel) and all(o.shape == (2, 4, 2) for o in outlines)
    x, y = arrays["patch_coords"][sel[0]]
    assert np.allclose(outlines[0][1].mean(0), [x + 0.75 * PS, y + 0.75 * PS])
    arrays_, attrs = _cache()
    patch, _ = _hot_scores(arrays_["patch_coords"])
    paths = render_evidence(
        slide, arrays_, attrs, {"patch": patch, "cell": np.linspace(0, 1, n)}, tmp_path,
        top_k=2, cells_store=store, max_px=256,
    )  # fmt: skip
    assert "region" not in paths and Image.open(paths["top_patches"]).size == (512, 256)


def test_hot_overlap_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    r = hot_overlap(s, y, top_fraction=0.2)  # top 2: 0.9 (lesion), 0.8 (not)
    assert r["n_top"] == 2 and r["top_in_lesion"] == 0.5
    assert r["lesion_rate"] == pytest.approx(0.2) and r["enrichment"] == pytest.approx(2.5)
    # AUROC: pairs (lesion, non-lesion) ranked right: 0.9 beats all 8; 0.1 beats the 5 zeros
    assert r["auroc"] == pytest.approx((8 + 5) / 16)
    assert hot_overlap(s, np.zeros(10, bool))["auroc"] is None


def test_evidence_object_is_accepted() -> None:
    from hwsi_model.evaluation.heatmaps import evidence_arrays
    from hwsi_model.model.evidence import Evidence

    ev = Evidence(
        wsi=0.3,
        region=torch.tensor([0.1, 0.2]),
        patch=torch.tensor([0.5, 0.6, 0.7], dtype=torch.bfloat16),
        cell_token=torch.zeros(1),
        cell=torch.tensor([0.9]),
    )
    arrays = evidence_arrays(ev)
    assert set(arrays) == {"region", "patch", "cell"}
    assert arrays["patch"].dtype == np.float32 and arrays["patch"].shape == (3,)
    with pytest.raises(ValueError):
        evidence_arrays({"region": np.zeros(2)})
