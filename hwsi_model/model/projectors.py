"""Scale-specific projectors: LayerNorm -> Linear -> GELU -> Linear, one per scale.

:class:`ScaleProjectors` holds one :class:`ScaleProjector` per scale into a common output width:
the shared alignment space (stage 1) or the LLM hidden size (stages 2-3). For the LLM it also
holds a learned scale-type embedding (one vector per scale) added to the projected tokens, so the
LLM can tell a WSI token from a region, patch or cellular token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hwsi_model.model.configuration import SCALES


class ScaleProjector(nn.Module):
    """``[..., in_dim] -> [..., out_dim]`` through LayerNorm, Linear, GELU, Linear."""

    def __init__(self, in_dim: int, out_dim: int, intermediate_size: int | None = None):
        super().__init__()
        mid = intermediate_size or out_dim
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, mid), nn.GELU(), nn.Linear(mid, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.net[1].weight.dtype))


class ScaleProjectors(nn.Module):
    """One projector per scale into ``out_dim``, optionally with a scale-type embedding.

    Args:
        in_dims: input width per scale, e.g. ``{"cell": 768, "patch": 1024, ...}``.
        out_dim: output width.
        scale_embedding: learn one ``[out_dim]`` vector per scale (added when asked).
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        out_dim: int,
        intermediate_size: int | None = None,
        scale_embedding: bool = False,
    ):
        super().__init__()
        self.out_dim = out_dim
        self.projectors = nn.ModuleDict(
            {s: ScaleProjector(d, out_dim, intermediate_size) for s, d in in_dims.items()}
        )
        self.scale_embedding = (
            nn.Parameter(torch.randn(len(SCALES), out_dim) * 0.02) if scale_embedding else None
        )

    def forward(
        self, scale: str, x: Tensor, add_scale_embedding: bool = False, project: bool = True
    ) -> Tensor:
        """Project ``x [..., in_dim(scale)]`` -> ``[..., out_dim]``; ``project=False`` only adds
        the scale embedding to an ``x`` already ``[..., out_dim]`` (e.g. after a resampler).

        The scale embedding is added here, in this module's forward, and nowhere else: under
        ZeRO-3 a module's parameters exist (gathered) only while its forward runs."""
        y = self.projectors[scale](x) if project else x
        if add_scale_embedding and self.scale_embedding is not None:
            y = y + self.scale_embedding[SCALES.index(scale)].to(y.dtype)
        return y
