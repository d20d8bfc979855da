"""The cache contract as tensors: validation and padded collation."""

from __future__ import annotations

import pytest
import torch
from model_helpers import D_C, D_P, S, make_slide

from hwsi_model.model.batch import collate_slides, selected_cell_rows


def test_collate_shapes_dtypes_and_masks() -> None:
    a = make_slide(0, n_regions=3, k=3, max_cells=5, empty_patches=1)
    b = make_slide(1, n_regions=1, k=2, max_cells=2)
    batch = collate_slides([a, b])
    n = max(a.patch_emb.shape[0], b.patch_emb.shape[0])
    L = int(max((a.cell_offsets.diff().max()), b.cell_offsets.diff().max()))
    assert batch.patch_emb.shape == (2, n, D_P) and batch.patch_emb.dtype == torch.float16
    assert batch.region_grid.shape == (2, 3, S, S) and batch.region_grid.dtype == torch.int64
    assert batch.selected.shape == (2, 3, 3)
    assert batch.cell_emb.shape == (2, 3, 3, L, D_C) and batch.cell_emb.dtype == torch.float16
    assert batch.cell_pos.dtype == torch.float32
    for m in (batch.patch_mask, batch.region_mask, batch.selected_mask, batch.cell_mask):
        assert m.dtype == torch.bool
    assert batch.region_mask.tolist() == [[True, True, True], [True, False, False]]
    assert int(batch.patch_mask[1].sum()) == b.patch_emb.shape[0]
    # Padded regions are all background, padded slots are -1.
    assert bool((batch.region_grid[1, 1:] == -1).all())
    assert bool((batch.selected[1, :, 2] == -1).all())
    assert int(batch.cell_mask[0].sum()) == a.cell_emb.shape[0]
    assert int(batch.cell_mask[1].sum()) == b.cell_emb.shape[0]


def test_cells_land_in_their_selected_slot_in_order() -> None:
    slide = make_slide(3, n_regions=2, k=3, max_cells=4, empty_patches=2)
    batch = collate_slides([slide])
    rows = selected_cell_rows(slide)
    assert len(rows) == slide.num_selected
    for r, k, start, stop in rows:
        n = stop - start
        assert int(batch.cell_mask[0, r, k].sum()) == n
        assert torch.equal(batch.cell_emb[0, r, k, :n], slide.cell_emb[start:stop])
        assert torch.equal(batch.cell_pos[0, r, k, :n], slide.cell_pos[start:stop])
    # The two empty patches have no cells.
    r0, k0, s0, e0 = rows[0]
    assert s0 == e0 and not bool(batch.cell_mask[0, r0, k0].any())


def test_selected_with_holes_keeps_slot_positions() -> None:
    slide = make_slide(4, n_regions=2, k=3, max_cells=3)
    # Drop the middle slot of region 0: cells of the remaining patches move up in the list.
    counts = slide.cell_offsets.diff()
    keep_patch = torch.ones(len(counts), dtype=torch.bool)
    keep_patch[1] = False
    cells_keep = torch.repeat_interleave(keep_patch, counts)
    slide.selected[0, 1] = -1
    slide.cell_emb = slide.cell_emb[cells_keep]
    slide.cell_pos = slide.cell_pos[cells_keep]
    slide.cell_offsets = torch.cat(
        [torch.zeros(1, dtype=torch.int64), counts[keep_patch].cumsum(0)]
    )
    batch = collate_slides([slide])
    assert batch.selected_mask[0, 0].tolist() == [True, False, True]
    assert not bool(batch.cell_mask[0, 0, 1].any())
    n0 = int(counts[0])
    assert torch.equal(batch.cell_emb[0, 0, 0, :n0], slide.cell_emb[:n0])


def test_slide_without_any_cells() -> None:
    slide = make_slide(5, n_regions=1, k=2, empty_patches=10)
    assert slide.cell_emb.shape[0] == 0
    batch = collate_slides([slide])
    assert batch.cell_emb.shape[3] == 1 and not bool(batch.cell_mask.any())


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda s: setattr(s, "cell_offsets", s.cell_offsets[:-1]), "cell_offsets"),
        (lambda s: s.selected.__setitem__((0, 0), 10**6), "selected"),
        (lambda s: setattr(s, "region_pos", s.region_pos[:1]), "region_pos"),
        (lambda s: setattr(s, "region_grid", s.region_grid.int()), "region_grid"),
    ],
)
def test_validate_names_the_broken_tensor(breakage, message: str) -> None:
    slide = make_slide(6, n_regions=2)
    breakage(slide)
    with pytest.raises(ValueError, match=message):
        collate_slides([slide])
