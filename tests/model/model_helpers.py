"""Helpers of the model tests: random slides in the cache contract, tiny configs, and builders of
a tiny causal LM and text encoder saved to a local folder (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import tiny_models
import torch

from hwsi_model.model.batch import SlideTensors
from hwsi_model.model.configuration import (
    CCAFConfig,
    HWSIConfig,
    LossConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SlideEncoderConfig,
    VisualConfig,
)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

D_P, D_C, S = 16, 12, 4

WORDS = str.split(
    "the a of and is are with in slide shows tissue tumor carcinoma benign glands nuclei "
    "large small round oval pleomorphic dense sparse chromatin coarse fine region patch cell "
    "what diagnosis describe cells how many yes no high low grade mitoses stroma necrosis "
    "present absent there which report findings . , ? :"
)


def make_slide(
    seed: int = 0,
    n_regions: int = 3,
    k: int = 3,
    tissue: float = 0.6,
    max_cells: int = 5,
    empty_patches: int = 0,
    d_p: int = D_P,
    d_c: int = D_C,
    s: int = S,
    slide_id: str = "",
) -> SlideTensors:
    """Random slide in the cache contract; the first ``empty_patches`` selected have no cells."""
    g = torch.Generator().manual_seed(seed)
    grids, selected = [], []
    n = 0
    for r in range(n_regions):
        tissue_pos = torch.rand(s * s, generator=g) < tissue
        tissue_pos[r % (s * s)] = True  # at least one tissue patch per region
        grid = torch.full((s * s,), -1, dtype=torch.int64)
        count = int(tissue_pos.sum())
        grid[tissue_pos] = torch.arange(n, n + count)
        rows = grid[tissue_pos]
        pick = rows[torch.randperm(count, generator=g)[:k]]
        sel = torch.full((k,), -1, dtype=torch.int64)
        sel[: len(pick)] = pick
        grids.append(grid.view(s, s))
        selected.append(sel)
        n += count
    selected_t = torch.stack(selected)
    m = int((selected_t >= 0).sum())
    counts = torch.randint(1, max_cells + 1, (m,), generator=g)
    counts[:empty_patches] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    c = int(offsets[-1])
    return SlideTensors(
        patch_emb=torch.randn(n, d_p, generator=g).half(),
        region_grid=torch.stack(grids),
        region_pos=torch.stack(
            [torch.arange(n_regions) // 3 + 2, torch.arange(n_regions) % 3 + 5], dim=1
        ),
        selected=selected_t,
        cell_emb=torch.randn(c, d_c, generator=g).half(),
        cell_pos=torch.rand(c, 2, generator=g),
        cell_offsets=offsets,
        slide_id=slide_id or f"slide{seed}",
    )


def tiny_visual_config(
    width: int = 32, llm_hidden_size: int | None = None, pooling: str = "cls"
) -> VisualConfig:
    return VisualConfig(
        patch_dim=D_P,
        cell_dim=D_C,
        ccaf=CCAFConfig(hidden_size=width, num_layers=2, num_heads=2, position_frequencies=4),
        region=RegionEncoderConfig(hidden_size=width, num_layers=1, num_heads=2, region_size=S),
        slide=SlideEncoderConfig(
            hidden_size=width, num_layers=1 if pooling == "cls" else 0, num_heads=2, pooling=pooling
        ),
        projector=ProjectorConfig(align_dim=24, llm_hidden_size=llm_hidden_size),
    )


def tiny_config(**kw) -> HWSIConfig:
    visual = kw.pop("visual", None) or tiny_visual_config()
    return HWSIConfig(visual=visual, loss=kw.pop("loss", None) or LossConfig(), **kw)


def build_tiny_llm(path: Path, hidden: int = 64) -> Path:
    """A 2-layer Qwen2-shaped causal LM over the test words."""
    return tiny_models.build_tiny_llm(path, WORDS, hidden, layers=2)


def build_tiny_text_encoder(path: Path, hidden: int = 32) -> Path:
    """A 1-layer BERT with a word-piece vocabulary of the test words."""
    return tiny_models.build_tiny_text_encoder(path, WORDS, hidden, layers=1)
