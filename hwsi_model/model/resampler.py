"""Learned-query (Perceiver) resampler: a variable-length token group -> ``num_queries`` tokens.

As in the authors' release, an option to bound the number of visual tokens sent to the LLM:
learned latent queries cross-attend to the group's tokens (and to themselves, so a slide with an
empty group still gives finite outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from hwsi_model.model.configuration import ResamplerConfig


class ResamplerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"resampler width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, latents: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """``latents [B, Q, D]``, ``tokens [B, U, D]``, ``mask [B, U] bool`` -> ``[B, Q, D]``."""
        b, nq, d = latents.shape
        hd = d // self.num_heads
        lat = self.norm_q(latents)
        kv_in = torch.cat([self.norm_kv(tokens), lat], dim=1)
        kv_mask = torch.cat([mask, mask.new_ones(b, nq)], dim=1)
        q = self.q(lat).view(b, nq, self.num_heads, hd).transpose(1, 2)
        k, v = self.kv(kv_in).view(b, -1, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_mask[:, None, None, :])
        latents = latents + self.proj(attn.transpose(1, 2).reshape(b, nq, d))
        return latents + self.mlp(self.norm_mlp(latents))


class Resampler(nn.Module):
    """``tokens [B, U, D]`` + ``mask [B, U]`` -> ``[B, num_queries, D]``."""

    def __init__(self, config: ResamplerConfig, dim: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(config.num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(
            ResamplerLayer(dim, config.num_heads, config.mlp_ratio)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        x = self.latents.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for layer in self.layers:
            x = layer(x, tokens, mask)
        return self.norm(x)
