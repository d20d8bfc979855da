"""Building blocks shared by CCAF, the region and slide encoders: a pre-norm transformer block
with a key padding mask, and positional encodings for 2-D positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block (ViT style)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """``x [N, T, D]``, ``key_mask [N, T] bool`` (True = real token) -> ``[N, T, D]``.

        Every row must have at least one real token (the encoders always prepend a [CLS]).
        """
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(n, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, heads, T, d_head]
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(n, t, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """``num_layers`` :class:`TransformerBlock` followed by a final LayerNorm."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """``x [N, T, D]``, ``key_mask [N, T] bool`` -> ``[N, T, D]``."""
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, key_mask, use_reentrant=False)
            else:
                x = block(x, key_mask)
        return self.norm(x)


def fourier_features(xy: Tensor, num_frequencies: int) -> Tensor:
    """Sin/cos features of coordinates in 0..1: ``[..., 2] -> [..., 4 * num_frequencies]``.

    Frequencies are ``pi * 2**j`` (j = 0..F-1), so the coarsest wave spans the unit square.
    """
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=xy.device, dtype=torch.float32)
    angles = xy.float()[..., None] * freqs  # [..., 2, F]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def sincos_2d(pos: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin/cos encoding (MAE style) of integer ``(row, col)``: ``[..., 2] -> [..., dim]``.

    Half the channels encode the row, half the column; unbounded, so any slide size works.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=pos.device) / quarter)
    angles = pos.float()[..., None] * omega  # [..., 2, dim/4]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
