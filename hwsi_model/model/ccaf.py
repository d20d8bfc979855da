"""CCAF (Cell-Cell Attention Fusion): the cells of one patch -> one cellular token.

A learned [CLS] token attends over the patch's cell embeddings; each cell carries its centroid
inside the patch as a Fourier positional encoding (no order-dependent encoding, so the output is
invariant to the order of the cells). Padding cells are masked out of attention. A patch without
cells gets a learned "no cells" token instead of the [CLS] output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hwsi_model.model.blocks import TransformerStack, fourier_features
from hwsi_model.model.configuration import CCAFConfig


@dataclass
class CCAFOutput:
    """``patch_token [P, H]``: one cellular token per patch; ``cell_states [P, L, H]``: per cell."""

    patch_token: Tensor
    cell_states: Tensor


class CCAF(nn.Module):
    """Transformer over the cells of each patch.

    Args:
        config: layers, heads, width.
        input_dim: width ``D_c`` of the cached cell embeddings.
    """

    def __init__(self, config: CCAFConfig, input_dim: int):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.input_proj = nn.Linear(input_dim, h)
        self.position_proj = nn.Linear(4 * config.position_frequencies, h)
        self.cls_token = nn.Parameter(torch.randn(h) * 0.02)
        self.no_cells_token = nn.Parameter(torch.randn(h) * 0.02)
        self.encoder = TransformerStack(
            h, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout
        )

    def forward(self, cell_emb: Tensor, cell_pos: Tensor, cell_mask: Tensor) -> CCAFOutput:
        """Fuse the cells of ``P`` patches.

        Args:
            cell_emb: ``[P, L, D_c]`` (any float dtype; cast to the module's dtype).
            cell_pos: ``[P, L, 2]`` float, centroid (x, y) inside the patch in 0..1.
            cell_mask: ``[P, L]`` bool, True for real cells; a row may be all False.

        Returns:
            :class:`CCAFOutput` with ``patch_token [P, H]`` and ``cell_states [P, L, H]``.
        """
        dtype = self.input_proj.weight.dtype
        p = cell_emb.shape[0]
        pos = fourier_features(cell_pos, self.config.position_frequencies).to(dtype)
        x = self.input_proj(cell_emb.to(dtype)) + self.position_proj(pos)
        cls = self.cls_token.expand(p, 1, -1)
        x = torch.cat([cls, x], dim=1)  # [P, 1 + L, H]
        mask = torch.cat([cell_mask.new_ones(p, 1), cell_mask], dim=1)
        h = self.encoder(x, mask)
        has_cells = cell_mask.any(dim=1, keepdim=True)  # [P, 1]
        token = torch.where(has_cells, h[:, 0], self.no_cells_token.expand(p, -1))
        return CCAFOutput(patch_token=token, cell_states=h[:, 1:])
