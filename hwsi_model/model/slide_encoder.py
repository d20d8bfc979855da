"""Slide encoder: a transformer over a slide's region tokens -> WSI token.

Region positions are the (row, col) of each region in the slide's region grid, shifted so the
slide's first tissue row/column is 0 (a translation of the tissue does not change the output),
and encoded with fixed 2-D sin/cos (no maximum slide size). ``pooling="cls"`` reads a learned
[CLS] token; ``pooling="mean"`` averages the region states, and with ``num_layers=0`` is the plain
mean of region tokens that the authors' release used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hwsi_model.model.blocks import TransformerStack, sincos_2d
from hwsi_model.model.configuration import SlideEncoderConfig


@dataclass
class SlideEncoderOutput:
    """``wsi_token [B, H]`` and ``region_states [B, R, H]`` (zeros at padded regions)."""

    wsi_token: Tensor
    region_states: Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` where ``mask`` (broadcast on trailing dims) is True; 0 if none."""
    m = mask.to(x.dtype)
    while m.ndim < x.ndim:
        m = m.unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


class SlideEncoder(nn.Module):
    """Transformer (or mean pool) over region tokens.

    Args:
        config: width, depth, heads, pooling.
        input_dim: width of the region tokens.
    """

    def __init__(self, config: SlideEncoderConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size if config.num_layers > 0 else input_dim
        self.encoder: TransformerStack | None = None
        if config.num_layers > 0:
            h = config.hidden_size
            self.input_proj = nn.Linear(input_dim, h)
            self.encoder = TransformerStack(
                h, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout
            )
            if config.pooling == "cls":
                self.cls_token = nn.Parameter(torch.randn(h) * 0.02)

    def forward(
        self, region_tokens: Tensor, region_pos: Tensor, region_mask: Tensor
    ) -> SlideEncoderOutput:
        """``region_tokens [B, R, D]``, ``region_pos [B, R, 2]`` int64, ``region_mask [B, R]``."""
        if self.encoder is None:
            states = region_tokens * region_mask[..., None].to(region_tokens.dtype)
            return SlideEncoderOutput(masked_mean(states, region_mask, 1), states)
        big = torch.iinfo(region_pos.dtype).max
        origin = region_pos.masked_fill(~region_mask[..., None], big).amin(dim=1, keepdim=True)
        pos = sincos_2d(region_pos - origin, self.config.hidden_size)
        x = self.input_proj(region_tokens) + pos.to(region_tokens.dtype)
        b = x.shape[0]
        use_cls = self.config.pooling == "cls"
        mask = region_mask
        if use_cls:
            x = torch.cat([self.cls_token.expand(b, 1, -1), x], dim=1)
            mask = torch.cat([region_mask.new_ones(b, 1), region_mask], dim=1)
        h = self.encoder(x, mask)
        states = h[:, 1:] if use_cls else h
        states = states * region_mask[..., None].to(states.dtype)
        token = h[:, 0] if use_cls else masked_mean(states, region_mask, 1)
        return SlideEncoderOutput(wsi_token=token, region_states=states)
