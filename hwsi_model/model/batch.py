"""One slide's cached tensors (:class:`SlideTensors`) and their padded batch (:class:`SlideBatch`).

The cache contract (written by the embedding step, one entry per slide)::

    patch_emb    [N, D_p]  float16  embeddings of all tissue patches
    region_grid  [R, S, S] int64    row into patch_emb at each grid position, -1 = background
    region_pos   [R, 2]    int64    (row, col) of each region in the slide's region grid
    selected     [R, K]    int64    diagnostically relevant patches per region, -1 = padding
    cell_emb     [C, D_c]  float16  cells of the selected patches
    cell_pos     [C, 2]    float32  cell centroid inside its patch, (x, y) in 0..1
    cell_offsets [M + 1]   int64    cells of selected patch m are rows offsets[m]:offsets[m+1];
                                    the M selected patches are listed region by region in the
                                    order of ``selected``, skipping -1

:func:`collate_slides` pads a list of slides to the batch maxima (B slides, R regions, N patches,
K selected slots, L cells per selected patch) and adds boolean masks (True = real entry). Cells
are laid out per selected slot, ``[B, R, K, L, D_c]``, so CCAF can run on the real slots only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class SlideTensors:
    """One slide's tensors, exactly as the cache contract stores them (see module docstring)."""

    patch_emb: Tensor
    region_grid: Tensor
    region_pos: Tensor
    selected: Tensor
    cell_emb: Tensor
    cell_pos: Tensor
    cell_offsets: Tensor
    slide_id: str = ""

    @property
    def num_selected(self) -> int:
        """M, the number of selected patches (entries of ``selected`` that are not -1)."""
        return int((self.selected >= 0).sum())

    def validate(self) -> None:
        """Raise ``ValueError`` naming the slide and the tensor that breaks the contract."""

        def fail(msg: str) -> None:
            raise ValueError(f"slide {self.slide_id or '?'}: {msg}")

        n, r = self.patch_emb.shape[0], self.region_grid.shape[0]
        if self.patch_emb.ndim != 2:
            fail(f"patch_emb must be [N, D_p], got {tuple(self.patch_emb.shape)}")
        g = self.region_grid
        if g.ndim != 3 or g.shape[1] != g.shape[2] or g.dtype != torch.int64:
            fail(f"region_grid must be [R, S, S] int64, got {tuple(g.shape)} {g.dtype}")
        if r < 1:
            fail("a slide needs at least one region")
        if g.numel() and (g.max() >= n or g.min() < -1):
            fail(f"region_grid indices must be in -1..{n - 1}")
        if tuple(self.region_pos.shape) != (r, 2):
            fail(f"region_pos must be [{r}, 2], got {tuple(self.region_pos.shape)}")
        s = self.selected
        if s.ndim != 2 or s.shape[0] != r or s.dtype != torch.int64:
            fail(f"selected must be [{r}, K] int64, got {tuple(s.shape)} {s.dtype}")
        if s.numel() and (s.max() >= n or s.min() < -1):
            fail(f"selected indices must be in -1..{n - 1}")
        m, c = self.num_selected, self.cell_emb.shape[0]
        off = self.cell_offsets
        if tuple(off.shape) != (m + 1,):
            fail(f"cell_offsets must have M + 1 = {m + 1} entries, got {tuple(off.shape)}")
        if int(off[0]) != 0 or int(off[-1]) != c or bool((off[1:] < off[:-1]).any()):
            fail(f"cell_offsets must rise from 0 to C = {c}")
        if tuple(self.cell_pos.shape) != (c, 2) or self.cell_emb.ndim != 2:
            fail("cell_emb must be [C, D_c] and cell_pos [C, 2]")


@dataclass
class SlideBatch:
    """Padded batch of slides; masks are ``bool`` with True for real entries.

    Shapes (B slides, N patches, R regions, S grid side, K selected slots, L cells per slot)::

        patch_emb     [B, N, D_p]        float16 (cache dtype; modules cast)
        patch_mask    [B, N]             bool
        region_grid   [B, R, S, S]       int64, -1 = background or padding
        region_pos    [B, R, 2]          int64
        region_mask   [B, R]             bool
        selected      [B, R, K]          int64, -1 = padding
        selected_mask [B, R, K]          bool
        cell_emb      [B, R, K, L, D_c]  float16
        cell_pos      [B, R, K, L, 2]    float32
        cell_mask     [B, R, K, L]       bool (a selected slot may have no cells)
    """

    patch_emb: Tensor
    patch_mask: Tensor
    region_grid: Tensor
    region_pos: Tensor
    region_mask: Tensor
    selected: Tensor
    selected_mask: Tensor
    cell_emb: Tensor
    cell_pos: Tensor
    cell_mask: Tensor
    slide_ids: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.patch_emb.shape[0]

    def to(self, device: torch.device | str) -> SlideBatch:
        """Copy of the batch with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return SlideBatch(**moved)


def collate_slides(slides: list[SlideTensors], validate: bool = True) -> SlideBatch:
    """Pad ``slides`` to the batch maxima; see :class:`SlideBatch` for the shapes.

    Cell rows keep their order: the cells of a selected patch fill ``cell_emb[b, r, k, :n]``.
    ``L`` is at least 1 so that shapes stay non-degenerate when no slide has cells.
    """
    if not slides:
        raise ValueError("collate_slides needs at least one slide")
    if validate:
        for s in slides:
            s.validate()
    sizes = {s.region_grid.shape[1] for s in slides}
    if len(sizes) != 1:
        raise ValueError(f"all slides of a batch must share the region grid size, got {sizes}")
    S = sizes.pop()
    B = len(slides)
    N = max(s.patch_emb.shape[0] for s in slides)
    R = max(s.region_grid.shape[0] for s in slides)
    K = max(max(s.selected.shape[1] for s in slides), 1)
    counts = [s.cell_offsets[1:] - s.cell_offsets[:-1] for s in slides]
    L = max([1] + [int(c.max()) for c in counts if c.numel()])
    D_p, D_c = slides[0].patch_emb.shape[1], slides[0].cell_emb.shape[1]
    p_dtype, c_dtype = slides[0].patch_emb.dtype, slides[0].cell_emb.dtype

    out = SlideBatch(
        patch_emb=torch.zeros(B, N, D_p, dtype=p_dtype),
        patch_mask=torch.zeros(B, N, dtype=torch.bool),
        region_grid=torch.full((B, R, S, S), -1, dtype=torch.int64),
        region_pos=torch.zeros(B, R, 2, dtype=torch.int64),
        region_mask=torch.zeros(B, R, dtype=torch.bool),
        selected=torch.full((B, R, K), -1, dtype=torch.int64),
        selected_mask=torch.zeros(B, R, K, dtype=torch.bool),
        cell_emb=torch.zeros(B, R, K, L, D_c, dtype=c_dtype),
        cell_pos=torch.zeros(B, R, K, L, 2, dtype=torch.float32),
        cell_mask=torch.zeros(B, R, K, L, dtype=torch.bool),
        slide_ids=[s.slide_id for s in slides],
    )
    for b, (s, count) in enumerate(zip(slides, counts, strict=True)):
        n, r, k = s.patch_emb.shape[0], s.region_grid.shape[0], s.selected.shape[1]
        out.patch_emb[b, :n] = s.patch_emb
        out.patch_mask[b, :n] = True
        out.region_grid[b, :r] = s.region_grid
        out.region_pos[b, :r] = s.region_pos
        out.region_mask[b, :r] = True
        out.selected[b, :r, :k] = s.selected
        out.selected_mask[b, :r, :k] = s.selected >= 0
        if s.cell_emb.shape[0] == 0:
            continue
        # Selected patch m sits at slot (slot_r[m], slot_k[m]); cell i belongs to patch owner[i].
        slot_r, slot_k = (s.selected >= 0).nonzero(as_tuple=True)
        owner = torch.repeat_interleave(torch.arange(len(count)), count)
        within = torch.arange(s.cell_emb.shape[0]) - s.cell_offsets[owner]
        out.cell_emb[b, slot_r[owner], slot_k[owner], within] = s.cell_emb.to(c_dtype)
        out.cell_pos[b, slot_r[owner], slot_k[owner], within] = s.cell_pos.float()
        out.cell_mask[b, slot_r[owner], slot_k[owner], within] = True
    return out


def selected_cell_rows(slide: SlideTensors) -> list[tuple[int, int, int, int]]:
    """``(r, k, start, stop)`` for each selected patch: where its cells are in ``cell_emb``."""
    slot_r, slot_k = (slide.selected >= 0).nonzero(as_tuple=True)
    off = slide.cell_offsets.tolist()
    return [
        (int(r), int(k), off[m], off[m + 1])
        for m, (r, k) in enumerate(zip(slot_r.tolist(), slot_k.tolist(), strict=True))
    ]
