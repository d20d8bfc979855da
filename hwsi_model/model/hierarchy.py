"""The visual side of MLLM-HWSI: CCAF + region encoder + slide encoder + scale projectors.

From one padded :class:`~hwsi_model.model.batch.SlideBatch` it computes the four scales::

    cell    CCAF over the cells of each selected patch   -> one cellular token per selected patch
    patch   the cached embedding of each selected patch
    region  region encoder over the region's grid         -> one token per region
    wsi     slide encoder over the region tokens          -> one token per slide

and projects them, per scale, into the shared alignment space (stage 1 losses, evidence) and,
when an LLM width is configured, into the LLM's hidden size (stages 2-3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from hwsi_model.model.batch import SlideBatch
from hwsi_model.model.ccaf import CCAF
from hwsi_model.model.configuration import SCALES, VisualConfig
from hwsi_model.model.projectors import ScaleProjectors
from hwsi_model.model.region_encoder import RegionEncoder, pack_regions
from hwsi_model.model.slide_encoder import SlideEncoder


@dataclass
class UnitEmbeddings:
    """The units of one scale for a batch: ``emb [B, U, D]`` and ``mask [B, U] bool``.

    U is 1 for the WSI (and the paragraph), R for regions, R * K for selected patches and cells.
    """

    emb: Tensor
    mask: Tensor


@dataclass
class VisualOutput:
    """Per-scale representations of a batch (before projection).

    Shapes::

        wsi_token     [B, H_s]
        region_tokens [B, R, H_r]     zeros at padded regions
        region_mask   [B, R]          bool
        patch_tokens  [B, R, K, D_p]  cached embeddings of the selected patches (zeros at padding)
        patch_mask    [B, R, K]       bool, real selected slots
        cell_tokens   [B, R, K, H_c]  CCAF output (the no-cells token where a patch has none)
        has_cells     [B, R, K]       bool
        cell_states   [P, L, H_c]     per-cell CCAF states of the P real slots (row-major order of
                                      ``patch_mask``), only when asked for (evidence maps)
    """

    wsi_token: Tensor
    region_tokens: Tensor
    region_mask: Tensor
    patch_tokens: Tensor
    patch_mask: Tensor
    cell_tokens: Tensor
    has_cells: Tensor
    cell_states: Tensor | None = None

    def units(self, scale: str) -> UnitEmbeddings:
        """The representation of one scale as ``[B, U, D]`` units with a mask."""
        b = self.wsi_token.shape[0]
        if scale == "wsi":
            return UnitEmbeddings(
                self.wsi_token[:, None], self.wsi_token.new_ones(b, 1, dtype=torch.bool)
            )
        if scale == "region":
            return UnitEmbeddings(self.region_tokens, self.region_mask)
        if scale == "patch":
            return UnitEmbeddings(self.patch_tokens.flatten(1, 2), self.patch_mask.flatten(1))
        if scale == "cell":
            return UnitEmbeddings(self.cell_tokens.flatten(1, 2), self.patch_mask.flatten(1))
        raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")


class HierarchicalVisualEncoder(nn.Module):
    """CCAF + region encoder + slide encoder + alignment (and LLM) projectors."""

    def __init__(self, config: VisualConfig):
        super().__init__()
        self.config = config
        self.ccaf = CCAF(config.ccaf, config.cell_dim)
        self.region_encoder = RegionEncoder(config.region, config.patch_dim)
        self.slide_encoder = SlideEncoder(config.slide, config.region.hidden_size)
        self.scale_dims = {
            "cell": config.ccaf.hidden_size,
            "patch": config.patch_dim,
            "region": config.region.hidden_size,
            "wsi": self.slide_encoder.hidden_size,
        }
        pc = config.projector
        self.align_projectors = ScaleProjectors(self.scale_dims, pc.align_dim, pc.intermediate_size)
        self.text_projector = nn.Linear(pc.text_dim, pc.align_dim) if pc.text_dim else None
        self.llm_projectors: ScaleProjectors | None = None
        if pc.llm_hidden_size:
            self.llm_projectors = ScaleProjectors(
                self.scale_dims, pc.llm_hidden_size, pc.intermediate_size, pc.scale_embedding
            )
        self.set_gradient_checkpointing(config.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for stack in (self.ccaf.encoder, self.region_encoder.encoder, self.slide_encoder.encoder):
            if stack is not None:
                stack.gradient_checkpointing = enabled

    @property
    def dtype(self) -> torch.dtype:
        return self.ccaf.input_proj.weight.dtype

    def forward(self, batch: SlideBatch, return_cell_states: bool = False) -> VisualOutput:
        """Encode a padded batch into the four scales (see :class:`VisualOutput`)."""
        B, R, K = batch.selected.shape
        side = batch.region_grid.shape[-1]
        if side != self.config.region.region_size:
            raise ValueError(
                f"region grid is {side} x {side} patches, the region encoder expects "
                f"region_size={self.config.region.region_size}"
            )
        dtype = self.dtype

        # Region scale: only the real regions' tissue patches are encoded.
        packed = pack_regions(batch.patch_emb, batch.region_grid, batch.region_mask)
        enc = self.region_encoder(packed.tokens, packed.positions, packed.mask)
        region_tokens = enc.region_token.new_zeros(B, R, enc.region_token.shape[-1])
        region_tokens = region_tokens.index_put(
            (packed.index[:, 0], packed.index[:, 1]), enc.region_token
        )

        # WSI scale.
        slide = self.slide_encoder(region_tokens, batch.region_pos, batch.region_mask)

        # Patch scale: the cached embeddings of the selected patches.
        patch_mask = batch.selected_mask
        b_idx = torch.arange(B, device=batch.selected.device)[:, None, None]
        patch_tokens = batch.patch_emb[b_idx, batch.selected.clamp(min=0)].to(dtype)
        patch_tokens = patch_tokens * patch_mask[..., None].to(dtype)

        # Cell scale: CCAF on the real selected slots only.
        slots = patch_mask.nonzero(as_tuple=True)
        fused, cell_states = self.fuse_cells(
            batch.cell_emb[slots], batch.cell_pos[slots], batch.cell_mask[slots], return_cell_states
        )
        cell_tokens = fused.new_zeros(B, R, K, fused.shape[-1])
        cell_tokens = cell_tokens.index_put(slots, fused)

        return VisualOutput(
            wsi_token=slide.wsi_token,
            region_tokens=region_tokens,
            region_mask=batch.region_mask,
            patch_tokens=patch_tokens,
            patch_mask=patch_mask,
            cell_tokens=cell_tokens,
            has_cells=batch.cell_mask.any(-1),
            cell_states=cell_states,
        )

    def fuse_cells(
        self, cell_emb: Tensor, cell_pos: Tensor, cell_mask: Tensor, return_states: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """CCAF over ``P`` patches in chunks of similar cell counts.

        Args:
            cell_emb: ``[P, L, D_c]``; cell_pos: ``[P, L, 2]``; cell_mask: ``[P, L]`` bool.

        Returns:
            ``[P, H_c]`` cellular tokens and, when asked, ``[P, L, H_c]`` per-cell states.
        """
        P, L = cell_mask.shape
        chunk = self.config.ccaf_chunk_size or max(P, 1)
        order = torch.argsort(cell_mask.sum(1), stable=True)
        tokens, states = [], []
        for idx in order.split(chunk):
            used = cell_mask[idx].any(0).nonzero()
            width = int(used.max()) + 1 if len(used) else 1  # trim the chunk's padding columns
            out = self.ccaf(cell_emb[idx, :width], cell_pos[idx, :width], cell_mask[idx, :width])
            tokens.append(out.patch_token)
            if return_states:
                states.append(F.pad(out.cell_states, (0, 0, 0, L - width)))
        if not tokens:  # no selected patch in the batch
            empty = self.ccaf.no_cells_token.new_zeros(0, self.ccaf.config.hidden_size)
            return empty, (empty.new_zeros(0, L, empty.shape[1]) if return_states else None)
        inverse = torch.argsort(order)
        token = torch.cat(tokens)[inverse]
        return token, (torch.cat(states)[inverse] if return_states else None)

    # -- projections -----------------------------------------------------------------------

    def align(
        self, out: VisualOutput, scales: list[str] | None = None
    ) -> dict[str, UnitEmbeddings]:
        """Unit embeddings of each scale in the alignment space, L2-normalised: ``[B, U, A]``."""
        result = {}
        for scale in scales or SCALES:
            u = out.units(scale)
            emb = F.normalize(self.align_projectors(scale, u.emb), dim=-1)
            result[scale] = UnitEmbeddings(emb, u.mask)
        return result

    def embed_text(self, text_emb: Tensor) -> Tensor:
        """Text-encoder output ``[..., D_t]`` -> normalised alignment-space ``[..., A]``."""
        if self.text_projector is not None:
            text_emb = self.text_projector(text_emb.to(self.text_projector.weight.dtype))
        return F.normalize(text_emb, dim=-1)

    def to_llm(
        self, out: VisualOutput, scales: list[str] | None = None, add_scale_embedding: bool = True
    ) -> dict[str, UnitEmbeddings]:
        """Unit tokens of each scale in the LLM hidden size: ``[B, U, H_llm]`` (not normalised)."""
        if self.llm_projectors is None:
            raise RuntimeError("no LLM projectors: set visual.projector.llm_hidden_size")
        result = {}
        for scale in scales or SCALES:
            u = out.units(scale)
            result[scale] = UnitEmbeddings(
                self.llm_projectors(scale, u.emb, add_scale_embedding), u.mask
            )
        return result
