"""Evidence maps: per-region, per-patch and per-cell relevance of a text."""

from __future__ import annotations

from pathlib import Path

import torch
from model_helpers import make_slide, tiny_config

from hwsi_model.model.batch import collate_slides
from hwsi_model.model.evidence import evidence_scores
from hwsi_model.model.mllm import HWSIModel


def test_evidence_shapes_and_consistency_with_the_alignment_space(
    tiny_text_encoder_dir: Path,
) -> None:
    torch.manual_seed(0)
    model = HWSIModel.from_config(tiny_config(text_encoder_path=str(tiny_text_encoder_dir)))
    model.eval()
    slide = make_slide(0, n_regions=3, k=3, max_cells=4, empty_patches=1)
    ev = evidence_scores(model, slide, "large pleomorphic nuclei")
    R, N, M, C = 3, slide.patch_emb.shape[0], slide.num_selected, slide.cell_emb.shape[0]
    assert ev.region.shape == (R,) and ev.patch.shape == (N,)
    assert ev.cell_token.shape == (M,) and ev.cell.shape == (C,)
    assert -1.0 <= ev.wsi <= 1.0 and bool((ev.patch.abs() <= 1 + 1e-5).all())
    # Same numbers as the alignment-space units of the hierarchy.
    with torch.no_grad():
        t = model.visual.embed_text(model.text_encoder(["large pleomorphic nuclei"])[0])
        align = model.visual.align(model.visual(collate_slides([slide])))
    torch.testing.assert_close(ev.region, align["region"].emb[0] @ t)
    sel = align["patch"].mask[0]
    torch.testing.assert_close(ev.cell_token, align["cell"].emb[0][sel] @ t)
    rows = slide.selected.flatten()
    torch.testing.assert_close(ev.patch[rows[rows >= 0]], align["patch"].emb[0][sel] @ t)
    # A string and its text-encoder vector give the same map.
    ev2 = evidence_scores(model, slide, model.text_encoder(["large pleomorphic nuclei"])[0])
    torch.testing.assert_close(ev2.cell, ev.cell)


def test_evidence_peaks_on_the_matching_patch_and_follows_cell_order() -> None:
    torch.manual_seed(0)
    model = HWSIModel(tiny_config()).eval()  # no text projector: texts live in the align space
    slide = make_slide(1, n_regions=2, k=3, max_cells=5)
    target = 7
    with torch.no_grad():
        text = model.visual.align_projectors("patch", slide.patch_emb[target].float())
    ev = evidence_scores(model, slide, text)
    assert int(ev.patch.argmax()) == target and abs(float(ev.patch[target]) - 1.0) < 1e-5
    # Reversing the cells of each patch reverses their scores; the cellular tokens stay.
    perm = []
    for a, b in zip(slide.cell_offsets[:-1].tolist(), slide.cell_offsets[1:].tolist(), strict=True):
        perm.extend(range(b - 1, a - 1, -1))
    flipped = make_slide(1, n_regions=2, k=3, max_cells=5)
    flipped.cell_emb, flipped.cell_pos = slide.cell_emb[perm], slide.cell_pos[perm]
    ev_f = evidence_scores(model, flipped, text)
    torch.testing.assert_close(ev_f.cell, ev.cell[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev_f.cell_token, ev.cell_token, atol=1e-5, rtol=1e-5)
