"""The timm adapter and CONCH heads, without timm: a small module with timm's ViT API stands in.

The stand-in is not a timm replacement: it only exposes the attributes the adapter reads
(``forward_features``, ``forward_head``, ``num_prefix_tokens``, ``patch_embed.patch_size``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hwsi_model.encoders.conch import (
    HEAD_KEYS,
    ConchV1Head,
    ConchV15Head,
    split_tower_state,
)
from hwsi_model.encoders.timm_encoder import (
    TimmPatchEncoder,
    load_state_dict_file,
    resolve_weights_file,
)

NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(3, dim, patch, patch)


class ViTLike(nn.Module):
    """CLS + ``n_reg`` register tokens + row-major patch tokens, as timm's VisionTransformer."""

    def __init__(self, dim: int = 8, patch: int = 4, n_reg: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = _PatchEmbed(dim, patch)
        self.num_prefix_tokens = 1 + n_reg
        self.num_features = dim
        self.prefix = nn.Parameter(torch.randn(1, 1 + n_reg, dim))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed.proj(x)  # [B, C, h, w]
        tokens = grid.flatten(2).transpose(1, 2)
        return torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats[:, self.num_prefix_tokens :].amax(dim=1)


class CNNLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats.mean(dim=(2, 3))


def test_vit_tokens_skip_prefix_tokens_and_keep_the_grid_orientation() -> None:
    vit = ViTLike()
    enc = TimmPatchEncoder(vit, name="toy", pooling="cls+mean", input_size=16, **NORM)
    assert (enc.embed_dim, enc.token_dim) == (16, 8)  # measured: CLS (8) + mean token (8)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        emb, tokens = enc.forward_with_tokens(x)
        grid = vit.patch_embed.proj(x)  # [B, 8, 4, 4]
    assert tokens.shape == (2, 4, 4, 8)
    assert torch.allclose(tokens, grid.permute(0, 2, 3, 1))  # token (i, j) = grid cell (i, j)
    cls = vit.prefix[0, 0].expand(2, -1)
    assert torch.allclose(emb, torch.cat([cls, grid.mean(dim=(2, 3))], dim=-1))  # no registers


def test_cls_and_head_pooling() -> None:
    vit = ViTLike()
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        cls = TimmPatchEncoder(vit, name="toy", pooling="cls", input_size=16, **NORM)(x)
        head = TimmPatchEncoder(vit, name="toy", pooling="head", input_size=16, **NORM)(x)
        feats = vit.forward_features(x)
    assert torch.equal(cls, feats[:, 0])
    assert torch.equal(head, vit.forward_head(feats))


def test_cnn_gives_pooled_embeddings_and_no_token_map() -> None:
    enc = TimmPatchEncoder(CNNLike(), name="cnn", pooling="head", input_size=16, **NORM)
    assert enc.token_dim is None and enc.embed_dim == 6
    emb, tokens = enc.forward_with_tokens(torch.randn(2, 3, 16, 16))
    assert emb.shape == (2, 6) and tokens is None
    with pytest.raises(ValueError, match="ViT token output"):
        TimmPatchEncoder(CNNLike(), name="cnn", pooling="cls", input_size=16, embed_dim=6, **NORM)(
            torch.randn(1, 3, 16, 16)
        )


def test_conch_heads_have_the_released_parameter_names_and_shapes() -> None:
    v1 = ConchV1Head(embed_dim=16, context_dim=8, n_head=2)
    assert set(v1.state_dict()) == {
        "attn_pool_contrast.query",
        "attn_pool_contrast.attn.q_proj_weight",
        "attn_pool_contrast.attn.k_proj_weight",
        "attn_pool_contrast.attn.v_proj_weight",
        "attn_pool_contrast.attn.in_proj_bias",
        "attn_pool_contrast.attn.out_proj.weight",
        "attn_pool_contrast.attn.out_proj.bias",
        "attn_pool_contrast.ln_q.weight",
        "attn_pool_contrast.ln_q.bias",
        "attn_pool_contrast.ln_k.weight",
        "attn_pool_contrast.ln_k.bias",
        "ln_contrast.weight",
        "ln_contrast.bias",
        "proj_contrast",
    }
    v15 = ConchV15Head(embed_dim=16, context_dim=8, n_head=2)
    assert {k.split(".", 1)[1] for k in v15.state_dict() if k.startswith("attn_pool")} == {
        "query",
        "ln_k.weight",
        "ln_k.bias",
        "ln_q.weight",
        "ln_q.bias",
        "to_q.weight",
        "to_kv.weight",
        "to_out.weight",
    }
    tokens = torch.randn(3, 10, 8)
    assert v1(tokens).shape == (3, 16) and v15(tokens).shape == (3, 16)


def test_conch_v15_pooler_over_one_token_returns_its_projected_value() -> None:
    pool = ConchV15Head(embed_dim=16, context_dim=8, n_head=2).attn_pool_contrast
    x = torch.randn(4, 1, 8)
    with torch.no_grad():  # softmax over a single key is 1: the output is to_out(v)
        v = pool.to_kv(pool.ln_k(x)).chunk(2, dim=-1)[1]
        assert torch.allclose(pool(x)[:, 0], pool.to_out(v)[:, 0], atol=1e-6)


def test_split_tower_state_keeps_only_the_vision_tower() -> None:
    t = torch.zeros(1)
    sd = {
        "visual.trunk.pos_embed": t,
        "visual.trunk.blocks.0.attn.qkv.weight": t,
        "visual.attn_pool_contrast.query": t,
        "visual.ln_contrast.weight": t,
        "visual.proj_contrast": t,
        "visual.attn_pool_caption.query": t,
        "text.token_embedding.weight": t,
        "logit_scale": t,
    }
    trunk, head = split_tower_state(sd, "visual.", HEAD_KEYS)
    assert set(trunk) == {"pos_embed", "blocks.0.attn.qkv.weight"}
    assert set(head) == {"attn_pool_contrast.query", "ln_contrast.weight", "proj_contrast"}


def test_state_dict_files_are_unwrapped_and_found(tmp_path: Path) -> None:
    w = torch.arange(4.0)
    torch.save({"state_dict": {"module.blocks.0.w": w, "step": 3}}, tmp_path / "ckpt.pth")
    assert list(load_state_dict_file(tmp_path / "ckpt.pth")) == ["blocks.0.w"]
    save_file({"a": w}, str(tmp_path / "model.safetensors"))
    assert torch.equal(load_state_dict_file(tmp_path / "model.safetensors")["a"], w)
    folder = tmp_path
    assert resolve_weights_file(folder, "pytorch_model_vision.bin").name == "model.safetensors"
    (folder / "pytorch_model_vision.bin").write_bytes(b"x")
    assert resolve_weights_file(folder, "pytorch_model_vision.bin").name == (
        "pytorch_model_vision.bin"
    )
