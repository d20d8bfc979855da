"""CCAF: shapes, permutation and padding invariance, the no-cells token, positions."""

from __future__ import annotations

import pytest
import torch
from model_helpers import D_C

from hwsi_model.model.ccaf import CCAF
from hwsi_model.model.configuration import CCAFConfig


@pytest.fixture
def ccaf() -> CCAF:
    torch.manual_seed(0)
    return CCAF(CCAFConfig(hidden_size=32, num_layers=2, num_heads=2), D_C).eval()


def cells(p: int = 3, L: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(p, L, D_C, generator=g)
    pos = torch.rand(p, L, 2, generator=g)
    mask = torch.ones(p, L, dtype=torch.bool)
    mask[1, 4:] = False  # patch 1 has 4 cells
    return emb, pos, mask


def test_shapes_and_dtypes(ccaf: CCAF) -> None:
    emb, pos, mask = cells()
    out = ccaf(emb.half(), pos, mask)  # cache dtype float16 in, module dtype out
    assert out.patch_token.shape == (3, 32) and out.patch_token.dtype == torch.float32
    assert out.cell_states.shape == (3, 6, 32)
    assert torch.isfinite(out.patch_token).all()


def test_permuting_cells_does_not_change_the_token(ccaf: CCAF) -> None:
    emb, pos, mask = cells()
    ref = ccaf(emb, pos, mask).patch_token
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = ccaf(emb[:, perm], pos[:, perm], mask[:, perm]).patch_token
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_extra_padding_does_not_change_the_token(ccaf: CCAF) -> None:
    emb, pos, mask = cells()
    ref = ccaf(emb, pos, mask).patch_token
    pad = 5
    emb_p = torch.cat([emb, torch.randn(3, pad, D_C) * 100], dim=1)  # garbage in padding
    pos_p = torch.cat([pos, torch.rand(3, pad, 2)], dim=1)
    mask_p = torch.cat([mask, torch.zeros(3, pad, dtype=torch.bool)], dim=1)
    out = ccaf(emb_p, pos_p, mask_p).patch_token
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # Also: padding cells inside a row (patch 1 has 2 masked cells) are ignored.
    emb2 = emb.clone()
    emb2[1, 4:] = 1e3
    torch.testing.assert_close(ccaf(emb2, pos, mask).patch_token, ref, atol=1e-5, rtol=1e-5)


def test_empty_patch_gets_the_no_cells_token(ccaf: CCAF) -> None:
    emb, pos, mask = cells()
    mask[2] = False
    out = ccaf(emb, pos, mask).patch_token
    assert torch.equal(out[2], ccaf.no_cells_token.detach())
    assert not torch.equal(out[0], ccaf.no_cells_token.detach())
    # The no-cells token is learnable: it receives the gradient of an empty patch.
    ccaf(emb, pos, mask).patch_token[2].sum().backward()
    assert ccaf.no_cells_token.grad is not None and ccaf.no_cells_token.grad.abs().sum() > 0


def test_cell_position_matters(ccaf: CCAF) -> None:
    emb, pos, mask = cells()
    ref = ccaf(emb, pos, mask).patch_token
    pos2 = pos.clone()
    pos2[0, 0] = 1.0 - pos2[0, 0]
    out = ccaf(emb, pos2, mask).patch_token
    assert not torch.allclose(out[0], ref[0], atol=1e-4)
    torch.testing.assert_close(out[1:], ref[1:])
