"""CONCH v1 and v1.5 vision towers: a timm ViT trunk plus CONCH's attentional-pooling head.

The heads are plain torch modules whose parameter names match the released checkpoints
(``MahmoodLab/CONCH`` ``pytorch_model.bin``: ``visual.trunk.*``, ``visual.attn_pool_contrast.*``,
``visual.ln_contrast.*``, ``visual.proj_contrast``; ``MahmoodLab/conchv1_5``
``pytorch_model_vision.bin``: ``trunk.*``, ``attn_pool_contrast.*``, ``ln_contrast.*``), so neither
the ``conch`` package nor TITAN's remote code is needed; only timm for the trunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from hwsi_model.encoders.base import checkpoint_hash
from hwsi_model.encoders.specs import EncoderSpec
from hwsi_model.encoders.timm_encoder import (
    CheckpointMismatchError,
    TimmPatchEncoder,
    fit_pos_embed,
    import_timm,
    load_state_dict_file,
    load_strict,
    resolve_arch_kwargs,
)

log = logging.getLogger(__name__)


class ConchV1Pooler(nn.Module):
    """CONCH v1 (open_clip CoCa) attentional pooler: learned queries cross-attend to the tokens.

    ``[B, L, context_dim]`` -> ``[B, n_queries, d_model]``.
    """

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln_k(x).permute(1, 0, 2)  # [L, B, C]
        q = self.ln_q(self.query).unsqueeze(1).expand(-1, x.shape[1], -1)
        out = self.attn(q, x, x, need_weights=False)[0]
        return out.permute(1, 0, 2)


class ConchV1Head(nn.Module):
    """Contrastive image embedding of CONCH v1: pooler -> LayerNorm -> ``proj_contrast``.

    Trunk tokens ``[B, L, 768]`` -> ``[B, 512]`` in CONCH's shared image-text space.
    """

    def __init__(self, embed_dim: int = 512, context_dim: int = 768, n_head: int = 8):
        super().__init__()
        self.attn_pool_contrast = ConchV1Pooler(embed_dim, context_dim, n_head, n_queries=1)
        self.ln_contrast = nn.LayerNorm(embed_dim)
        self.proj_contrast = nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, embed_dim))

    def forward(self, tokens: Tensor) -> Tensor:
        pooled = self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
        return pooled @ self.proj_contrast


class ConchV15Pooler(nn.Module):
    """CONCH v1.5 (TITAN) attentional pooler: ``[B, L, context_dim]`` -> ``[B, n_q, d_model]``."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.heads = n_head
        self.scale = (d_model // n_head) ** -0.5
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)  # [B, Q, d]
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)  # [B, L, d] each

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # [B, h, T, d/h]

        q, k, v = heads(q), heads(k), heads(v)
        attn = (q * self.scale) @ k.transpose(-1, -2)
        attn = (attn - attn.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1])
        return self.to_out(out)


class ConchV15Head(nn.Module):
    """CONCH v1.5 image embedding: pooler -> LayerNorm; tokens ``[B, L, 1024]`` -> ``[B, 768]``."""

    def __init__(self, embed_dim: int = 768, context_dim: int = 1024, n_head: int = 8):
        super().__init__()
        self.attn_pool_contrast = ConchV15Pooler(embed_dim, context_dim, n_head, n_queries=1)
        self.ln_contrast = nn.LayerNorm(embed_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


HEAD_KEYS = ("attn_pool_contrast.", "ln_contrast.", "proj_contrast")


def split_tower_state(
    sd: dict[str, Tensor], tower_prefix: str, head_keys: tuple[str, ...]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a checkpoint into (trunk tensors, head tensors), dropping the tower prefix.

    Tensors of other parts (CONCH's text tower, caption pooler, decoder) are ignored.
    """
    trunk, head = {}, {}
    for key, value in sd.items():
        if not key.startswith(tower_prefix):
            continue
        k = key[len(tower_prefix) :]
        if k.startswith("trunk."):
            trunk[k[len("trunk.") :]] = value
        elif k.startswith(head_keys):
            head[k] = value
    return trunk, head


def _head_for(spec: EncoderSpec) -> tuple[nn.Module, str]:
    if spec.family == "conch_v1":
        return ConchV1Head(), "visual."
    if spec.family == "conch_v1_5":
        return ConchV15Head(), ""
    raise ValueError(f"not a CONCH family: {spec.family!r}")


def build_conch_encoder(spec: EncoderSpec, weights: Path | None) -> TimmPatchEncoder:
    """CONCH v1 / v1.5 from its released vision weights (``None``: random, benchmarks only)."""
    timm = import_timm(spec.name)
    kwargs = resolve_arch_kwargs(timm, spec.arch_kwargs)
    trunk = timm.create_model(spec.arch, pretrained=False, **kwargs)
    head, prefix = _head_for(spec)
    if weights is not None:
        sd = load_state_dict_file(weights)
        if prefix and not any(k.startswith(prefix) for k in sd):
            prefix = ""  # a vision-only export
        trunk_sd, head_sd = split_tower_state(sd, prefix, HEAD_KEYS)
        if not trunk_sd:
            raise CheckpointMismatchError(
                f"{weights} has no '{prefix}trunk.*' tensors: not a {spec.name} checkpoint"
            )
        fit_pos_embed(timm, trunk, trunk_sd)
        load_strict(trunk, trunk_sd, f"the {spec.name} trunk", str(weights))
        load_strict(head, head_sd, f"the {spec.name} pooling head", str(weights))
    else:
        log.warning("encoder %s: RANDOM weights (benchmarks only, not for features)", spec.name)
    return TimmPatchEncoder(
        trunk,
        name=spec.name,
        pooling="attn_pool",
        head=head,
        input_size=spec.input_size,
        embed_dim=spec.embed_dim,
        mean=spec.mean,
        std=spec.std,
        checkpoint_hash=checkpoint_hash(weights) if weights is not None else "",
        precision=spec.precision,
        resize_size=spec.resize_size,
        interpolation=spec.interpolation,
    )
