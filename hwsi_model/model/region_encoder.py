"""Region encoder: a small ViT over a region's ``S x S`` grid of patch embeddings -> region token.

Background positions (grid value -1) are not tokens at all: :func:`pack_regions` gathers only the
tissue patches of each real region (in raster order, padded to the batch's largest tissue count)
together with their (row, col) inside the grid, which the encoder adds as learned row and column
embeddings. A learned [CLS] token gives the region token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hwsi_model.model.blocks import TransformerStack
from hwsi_model.model.configuration import RegionEncoderConfig


@dataclass
class PackedRegions:
    """The tissue patches of the ``Q`` real regions of a batch.

    ``tokens [Q, T, D_p]`` (dtype of ``patch_emb``), ``positions [Q, T, 2] int64`` (row, col in the
    region grid), ``mask [Q, T] bool``, ``index [Q, 2] int64`` (slide b, region r) of each region.
    """

    tokens: Tensor
    positions: Tensor
    mask: Tensor
    index: Tensor


def pack_regions(patch_emb: Tensor, region_grid: Tensor, region_mask: Tensor) -> PackedRegions:
    """Gather each real region's tissue patches.

    Args:
        patch_emb: ``[B, N, D_p]``.
        region_grid: ``[B, R, S, S] int64``, patch row or -1 (background / padding).
        region_mask: ``[B, R] bool``.
    """
    S = region_grid.shape[-1]
    index = region_mask.nonzero()  # [Q, 2]
    flat = region_grid[index[:, 0], index[:, 1]].flatten(1)  # [Q, S*S]
    tissue = flat >= 0
    T = max(int(tissue.sum(1).max()) if len(flat) else 0, 1)
    # Tissue positions first (stable: raster order kept), then cut to the largest tissue count.
    order = torch.argsort((~tissue).to(torch.int8), dim=1, stable=True)[:, :T]
    mask = tissue.gather(1, order)
    rows = flat.gather(1, order).clamp(min=0)
    tokens = patch_emb[index[:, 0, None], rows] * mask[..., None].to(patch_emb.dtype)
    positions = torch.stack([order // S, order % S], dim=-1)
    return PackedRegions(tokens=tokens, positions=positions, mask=mask, index=index)


@dataclass
class RegionEncoderOutput:
    """``region_token [Q, H]`` and ``patch_states [Q, T, H]`` (contextualised tissue patches)."""

    region_token: Tensor
    patch_states: Tensor


class RegionEncoder(nn.Module):
    """ViT over packed region tokens.

    Args:
        config: width, depth, heads, grid side ``region_size``.
        input_dim: width ``D_p`` of the cached patch embeddings.
    """

    def __init__(self, config: RegionEncoderConfig, input_dim: int):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.input_proj = nn.Linear(input_dim, h)
        self.row_embed = nn.Embedding(config.region_size, h)
        self.col_embed = nn.Embedding(config.region_size, h)
        self.cls_token = nn.Parameter(torch.randn(h) * 0.02)
        nn.init.normal_(self.row_embed.weight, std=0.02)
        nn.init.normal_(self.col_embed.weight, std=0.02)
        self.encoder = TransformerStack(
            h, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout
        )

    def forward(self, tokens: Tensor, positions: Tensor, mask: Tensor) -> RegionEncoderOutput:
        """``tokens [Q, T, D_p]``, ``positions [Q, T, 2] int64``, ``mask [Q, T] bool``.

        Returns region tokens ``[Q, H]`` (rows with no tissue give the [CLS]'s encoding alone).
        """
        dtype = self.input_proj.weight.dtype
        q = tokens.shape[0]
        x = self.input_proj(tokens.to(dtype))
        x = x + self.row_embed(positions[..., 0]) + self.col_embed(positions[..., 1])
        x = torch.cat([self.cls_token.expand(q, 1, -1), x], dim=1)
        key_mask = torch.cat([mask.new_ones(q, 1), mask], dim=1)
        h = self.encoder(x, key_mask)
        return RegionEncoderOutput(region_token=h[:, 0], patch_states=h[:, 1:])
