import logging

import numpy as np
import openslide
import pytest
from PIL import Image

from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.errors import StoreError
from hwsi_model.slide.patches import iter_patches
from hwsi_model.slide.reader import open_slide
from hwsi_model.tiling.grid import patch_geometry
from hwsi_model.tiling.steps import tiling_step, tiling_summary, tissue_step
from hwsi_model.tiling.tissue import TissueParams, load_tissue


@pytest.mark.parametrize(
    ("slide_mpp", "tol", "expected"),
    [(0.499, 0.05, 256), (0.5, 0.05, 256), (0.25, 0.05, 512), (1.0, 0.05, 128), (0.499, 0.0, 257)],
)
def test_patch_geometry(slide_mpp, tol, expected):
    g = patch_geometry(slide_mpp, 0.5, 256, 16, mpp_tolerance=tol)
    assert g.patch_size_level0 == expected
    assert g.region_size_level0 == 16 * expected
    assert g.mpp_effective == pytest.approx(slide_mpp * expected / 256)


def run_slide(path, out, slide_id, region_size=4, mpp_override=None, **kw):
    tissue_step(path, slide_id, out / "tissue" / slide_id, TissueParams(), mpp_override)
    return tiling_step(
        slide_id,
        out / "tissue" / slide_id,
        out / "tiles" / f"{slide_id}.zarr",
        out / "qc" / f"{slide_id}.png",
        region_size=region_size,
        **kw,
    )


def expected_count(mask: np.ndarray, dims, ps0: int, min_frac: float) -> int:
    """Independent count: nearest-upsample the mask to level 0 and average 256-px blocks."""
    w, h = dims
    full = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST))
    rows, cols = h // ps0, w // ps0
    blocks = full[: rows * ps0, : cols * ps0].reshape(rows, ps0, cols, ps0).mean(axis=(1, 3)) / 255
    return int((blocks >= min_frac).sum())


def test_cmu_tiles_at_half_micron(cmu_slide, tmp_path):
    tiles = run_slide(cmu_slide, tmp_path, "cmu")
    g = tiles.geometry
    assert g.patch_size_level0 == 256 and g.mpp_effective == pytest.approx(0.499)
    # 2220 x 2967 px -> 8 full columns x 11 full rows of 256 px.
    assert tiles.grid_shape == (11, 8)
    tissue, _ = load_tissue(tmp_path / "tissue" / "cmu")
    want = expected_count(tissue.mask, (2220, 2967), 256, 0.25)
    assert abs(len(tiles) - want) <= 1
    assert 25 <= len(tiles) <= 60  # the tissue covers about half of the slide
    # Coordinates read back the same pixels as a plain OpenSlide read at level 0.
    ref = openslide.OpenSlide(str(cmu_slide))
    with open_slide(cmu_slide) as r:
        patches = dict(iter_patches(r, tiles.coords, g.patch_size_level0, g.patch_size, block=4))
    assert sorted(patches) == list(range(len(tiles)))
    for i, (x, y) in enumerate(tiles.coords):
        theirs = np.asarray(ref.read_region((int(x), int(y)), 0, (256, 256)))[..., :3]
        np.testing.assert_array_equal(patches[i], theirs)
    # Kept patches are tissue, not glass: mean saturation clearly above the background.
    assert (tiles.tissue_fraction >= 0.25).all()
    assert (tmp_path / "qc" / "cmu.png").stat().st_size > 1000


def test_grid_and_region_bookkeeping(cmu_slide, tmp_path):
    tiles = run_slide(cmu_slide, tmp_path, "cmu", region_size=4)
    stored, attrs = read_tiles(tmp_path / "tiles" / "cmu.zarr")
    np.testing.assert_array_equal(stored.coords, tiles.coords)
    ps0, R = 256, 4
    np.testing.assert_array_equal(stored.coords, stored.grid[:, ::-1].astype(np.int64) * ps0)
    np.testing.assert_array_equal(stored.region_pos, stored.grid % R)
    off = stored.region_offsets
    assert off[0] == 0 and off[-1] == len(stored) and len(off) == stored.n_regions + 1
    for r in range(stored.n_regions):
        sl = slice(off[r], off[r + 1])
        assert (stored.region[sl] == r).all()
        np.testing.assert_array_equal(
            stored.grid[sl] // R, np.broadcast_to(stored.region_grid[r], (off[r + 1] - off[r], 2))
        )
        np.testing.assert_array_equal(
            stored.region_coords[r], stored.region_grid[r][::-1] * ps0 * R
        )
    for key in (
        "mpp_target",
        "mpp_slide",
        "mpp_effective",
        "patch_size",
        "patch_size_level0",
        "region_size",
        "region_size_level0",
        "slide_dimensions",
        "config_hash",
        "schema_version",
        "hwsi_version",
        "mpp_source",
        "tissue",
    ):
        assert key in attrs
    assert attrs["slide_dimensions"] == [2220, 2967]


def test_quarter_micron_slide_gets_512_px_patches(make_slide, tmp_path):
    path = make_slide("q", 3072, 2560, mpp=0.25)
    tiles = run_slide(path, tmp_path, "q")
    assert tiles.geometry.patch_size_level0 == 512
    assert tiles.geometry.region_size_level0 == 2048
    assert len(tiles) > 0
    assert (tiles.coords % 512 == 0).all()
    # Block reads (resized 512 -> 256 as one image) agree with per-patch reads.
    with open_slide(path) as r:
        for i, patch in iter_patches(r, tiles.coords, 512, 256, block=3):
            x, y = tiles.coords[i]
            single = r.read_box(int(x), int(y), 512, 512, 256, 256)
            assert patch.shape == (256, 256, 3)
            diff = np.abs(patch.astype(int) - single.astype(int))
            assert diff[2:-2, 2:-2].max() <= 2  # only resampling at block seams differs


def test_empty_slide_gives_valid_empty_store(make_slide, tmp_path, caplog):
    path = make_slide("blank", 2048, 1536, mpp=0.5, blank=True)
    with caplog.at_level(logging.WARNING):
        tiles = run_slide(path, tmp_path, "blank")
    assert len(tiles) == 0 and tiles.n_regions == 0
    assert "no tissue found" in caplog.text
    stored, attrs = read_tiles(tmp_path / "tiles" / "blank.zarr")
    assert len(stored) == 0 and attrs["n_patches"] == 0
    assert stored.coords.shape == (0, 2)
    df = tiling_summary([tmp_path / "tiles" / "blank.zarr"], tmp_path / "summary.tsv")
    assert df.loc[0, "n_patches"] == 0


def test_sample_sheet_mpp_is_used(slides_dir, tmp_path):
    tiles = run_slide(slides_dir / "boxes.tiff", tmp_path, "boxes", mpp_override=0.5)
    _, attrs = read_tiles(tmp_path / "tiles" / "boxes.zarr")
    assert attrs["mpp_source"] == "sample_sheet" and attrs["mpp_slide"] == 0.5
    assert tiles.grid_shape == (0, 1)  # 300 x 250 px: one column, no full row


def test_read_tiles_rejects_wrong_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        read_tiles(tmp_path / "nothing.zarr")
    import zarr

    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    g.attrs["schema"] = "hwsi.tiles"
    g.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        read_tiles(tmp_path / "other.zarr")
