"""Region and slide encoders and the composed visual hierarchy."""

from __future__ import annotations

import pytest
import torch
from model_helpers import D_P, S, make_slide, tiny_visual_config

from hwsi_model.model.batch import collate_slides
from hwsi_model.model.configuration import RegionEncoderConfig, SlideEncoderConfig
from hwsi_model.model.hierarchy import HierarchicalVisualEncoder
from hwsi_model.model.region_encoder import RegionEncoder, pack_regions
from hwsi_model.model.slide_encoder import SlideEncoder


def test_pack_regions_keeps_tissue_in_raster_order() -> None:
    slide = make_slide(0, n_regions=2)
    batch = collate_slides([slide])
    packed = pack_regions(batch.patch_emb, batch.region_grid, batch.region_mask)
    assert packed.index.tolist() == [[0, 0], [0, 1]]
    for q in range(2):
        grid = slide.region_grid[q].flatten()
        tissue = (grid >= 0).nonzero().flatten()
        n = len(tissue)
        assert int(packed.mask[q].sum()) == n
        assert packed.positions[q, :n, 0].tolist() == (tissue // S).tolist()
        assert packed.positions[q, :n, 1].tolist() == (tissue % S).tolist()
        assert torch.equal(packed.tokens[q, :n], slide.patch_emb[grid[tissue]])


def test_region_encoder_ignores_background_and_padding() -> None:
    torch.manual_seed(0)
    enc = RegionEncoder(
        RegionEncoderConfig(hidden_size=32, num_layers=2, num_heads=2, region_size=S), D_P
    ).eval()
    tokens = torch.randn(2, 5, D_P)
    pos = torch.randint(0, S, (2, 5, 2))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    ref = enc(tokens, pos, mask).region_token
    tokens_p = torch.cat([tokens, torch.randn(2, 4, D_P) * 50], dim=1)
    pos_p = torch.cat([pos, torch.randint(0, S, (2, 4, 2))], dim=1)
    mask_p = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(tokens_p, pos_p, mask_p).region_token, ref, atol=1e-5, rtol=1e-5)
    # 2-D positions matter.
    assert not torch.allclose(enc(tokens, pos.flip(-1), mask).region_token, ref, atol=1e-4)


def test_slide_encoder_mean_pool_is_the_release_mean() -> None:
    enc = SlideEncoder(SlideEncoderConfig(num_layers=0, pooling="mean"), 8)
    x = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = enc(x, torch.zeros(2, 3, 2, dtype=torch.long), mask)
    torch.testing.assert_close(out.wsi_token[0], x[0].mean(0))
    torch.testing.assert_close(out.wsi_token[1], x[1, 0])
    assert list(enc.parameters()) == []


def test_slide_encoder_is_translation_invariant_and_uses_positions() -> None:
    torch.manual_seed(0)
    enc = SlideEncoder(SlideEncoderConfig(hidden_size=32, num_layers=1, num_heads=2), 16).eval()
    x = torch.randn(1, 4, 16)
    pos = torch.tensor([[[0, 0], [0, 1], [1, 0], [1, 1]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    ref = enc(x, pos, mask).wsi_token
    torch.testing.assert_close(enc(x, pos + torch.tensor([7, 3]), mask).wsi_token, ref)
    swapped = pos[:, [3, 1, 2, 0]]
    assert not torch.allclose(enc(x, swapped, mask).wsi_token, ref, atol=1e-4)


@pytest.fixture
def visual() -> HierarchicalVisualEncoder:
    torch.manual_seed(0)
    return HierarchicalVisualEncoder(tiny_visual_config(llm_hidden_size=40)).eval()


def test_hierarchy_shapes_for_variable_slides(visual: HierarchicalVisualEncoder) -> None:
    slides = [
        make_slide(0, n_regions=3, k=3, empty_patches=2),
        make_slide(1, n_regions=1, k=2),  # one region
        make_slide(2, n_regions=2, k=1, empty_patches=99),  # no cells at all
    ]
    batch = collate_slides(slides)
    out = visual(batch)
    B, R, K = 3, 3, 3
    assert out.wsi_token.shape == (B, 32)
    assert out.region_tokens.shape == (B, R, 32)
    assert out.patch_tokens.shape == (B, R, K, D_P) and out.patch_tokens.dtype == torch.float32
    assert out.cell_tokens.shape == (B, R, K, 32)
    assert out.patch_mask.tolist()[1] == [[True, True, False], [False] * 3, [False] * 3]
    assert not bool(out.has_cells[2].any())
    # Padded regions and slots are zeros; empty selected patches carry the no-cells token.
    assert bool((out.region_tokens[1, 1:] == 0).all())
    assert bool((out.cell_tokens[1, :, 2] == 0).all())
    torch.testing.assert_close(out.cell_tokens[2, 0, 0], visual.ccaf.no_cells_token.detach())
    align = visual.align(out)
    assert align["wsi"].emb.shape == (B, 1, 24)
    assert align["cell"].emb.shape == (B, R * K, 24)
    torch.testing.assert_close(align["region"].emb.norm(dim=-1), torch.ones(B, R))
    llm = visual.to_llm(out)
    assert llm["patch"].emb.shape == (B, R * K, 40)
    for tensor in (out.wsi_token, out.region_tokens, out.cell_tokens):
        assert torch.isfinite(tensor).all()


def test_hierarchy_is_invariant_to_batch_padding(visual: HierarchicalVisualEncoder) -> None:
    small = make_slide(1, n_regions=1, k=2, max_cells=2)
    big = make_slide(7, n_regions=4, k=4, max_cells=9, tissue=0.9)
    alone = visual(collate_slides([small]))
    padded = visual(collate_slides([big, small]))
    R, K = small.selected.shape
    torch.testing.assert_close(padded.wsi_token[1], alone.wsi_token[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        padded.region_tokens[1, :1], alone.region_tokens[0], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        padded.cell_tokens[1, :R, :K], alone.cell_tokens[0], atol=1e-5, rtol=1e-5
    )


def test_hierarchy_is_invariant_to_cell_order_inside_patches(
    visual: HierarchicalVisualEncoder,
) -> None:
    slide = make_slide(3, n_regions=2, k=3, max_cells=6)
    ref = visual(collate_slides([slide]))
    perm = []
    for a, b in zip(slide.cell_offsets[:-1].tolist(), slide.cell_offsets[1:].tolist(), strict=True):
        perm.extend((torch.randperm(b - a) + a).tolist())
    slide.cell_emb, slide.cell_pos = slide.cell_emb[perm], slide.cell_pos[perm]
    out = visual(collate_slides([slide]))
    torch.testing.assert_close(out.cell_tokens, ref.cell_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.wsi_token, ref.wsi_token, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    slide = make_slide(0, n_regions=2)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        visual = HierarchicalVisualEncoder(tiny_visual_config()).train()
        visual.set_gradient_checkpointing(ckpt)
        out = visual(collate_slides([slide]))
        (out.wsi_token.sum() + out.cell_tokens.sum()).backward()
        grads.append(visual.ccaf.input_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_ccaf_chunks_by_cell_count_give_the_same_tokens() -> None:
    slides = [make_slide(0, n_regions=3, k=3, max_cells=7, empty_patches=2), make_slide(1)]
    batch = collate_slides(slides)
    outs = []
    for chunk in (None, 2):
        torch.manual_seed(0)
        cfg = tiny_visual_config()
        cfg.ccaf_chunk_size = chunk
        visual = HierarchicalVisualEncoder(cfg).eval()
        outs.append(visual(batch, return_cell_states=True))
    torch.testing.assert_close(outs[1].cell_tokens, outs[0].cell_tokens, atol=1e-5, rtol=1e-5)
    real = batch.cell_mask[batch.selected_mask]  # states are compared at real cells only
    torch.testing.assert_close(
        outs[1].cell_states[real], outs[0].cell_states[real], atol=1e-5, rtol=1e-5
    )


def test_hierarchy_runs_in_bfloat16_and_checks_the_grid_size() -> None:
    torch.manual_seed(0)
    visual = HierarchicalVisualEncoder(tiny_visual_config(llm_hidden_size=40)).to(torch.bfloat16)
    out = visual(collate_slides([make_slide(0, empty_patches=1), make_slide(1, n_regions=1)]))
    for t in (out.wsi_token, out.region_tokens, out.patch_tokens, out.cell_tokens):
        assert t.dtype == torch.bfloat16 and torch.isfinite(t).all()
    assert visual.to_llm(out)["cell"].emb.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="region_size"):
        visual(collate_slides([make_slide(0, s=S + 2)]))
