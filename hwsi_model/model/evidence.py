"""Evidence maps: relevance of a text to every region, patch and cell of a slide.

Scores are cosine similarities in the stage-1 alignment space between the text (through the text
encoder and text projector) and

- the WSI token and each region token (region scale),
- every tissue patch of the slide, selected or not (patch projector on the cached embeddings),
- each selected patch's cellular token (CCAF output, cell projector),
- each cell: the CCAF's per-cell output state through the cell projector. These per-cell states
  are not supervised directly (the [CLS] output is); they share its final LayerNorm and space,
  which makes them the token-level (late-interaction) view of the cellular token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from hwsi_model.model.batch import SlideTensors, collate_slides
from hwsi_model.model.mllm import HWSIModel


@dataclass
class Evidence:
    """Relevance scores (cosine, -1..1) of one text for one slide.

    ``wsi`` scalar; ``region [R]`` (slide's region order); ``patch [N]`` (rows of ``patch_emb``);
    ``cell_token [M]`` (selected patches in cache order); ``cell [C]`` (rows of ``cell_emb``).
    """

    wsi: float
    region: Tensor
    patch: Tensor
    cell_token: Tensor
    cell: Tensor


@torch.no_grad()
def text_embedding(model: HWSIModel, text: str | Tensor) -> Tensor:
    """Normalised alignment-space embedding ``[A]`` of a string or a text-encoder vector."""
    if isinstance(text, str):
        if model.text_encoder is None:
            raise RuntimeError("a string text needs the model's text encoder")
        text = model.text_encoder([text])[0]
    return model.visual.embed_text(text)


@torch.no_grad()
def evidence_scores(
    model: HWSIModel, slide: SlideTensors, text: str | Tensor, patch_chunk: int = 65536
) -> Evidence:
    """Per-region, per-patch and per-cell relevance of ``text`` for ``slide`` (see module doc)."""
    visual = model.visual
    device = next(visual.parameters()).device
    t = text_embedding(model, text).to(device)
    batch = collate_slides([slide]).to(device)
    out = visual(batch, return_cell_states=True)

    def score(scale: str, x: Tensor) -> Tensor:
        y = F.normalize(visual.align_projectors(scale, x), dim=-1)
        return y @ t.to(y.dtype)

    R = slide.region_grid.shape[0]
    region = score("region", out.region_tokens[0, :R])
    wsi = float(score("wsi", out.wsi_token[0]))
    patch = torch.cat(
        [
            score("patch", slide.patch_emb[i : i + patch_chunk].to(device))
            for i in range(0, slide.patch_emb.shape[0], patch_chunk)
        ]
    )
    slots = out.patch_mask[0].nonzero(as_tuple=True)  # selected patches in cache order
    cell_token = score("cell", out.cell_tokens[0][slots])
    counts = (slide.cell_offsets[1:] - slide.cell_offsets[:-1]).tolist()
    per_slot = score("cell", out.cell_states)  # [M, L]
    cell = torch.cat([per_slot[m, :n] for m, n in enumerate(counts)] + [per_slot.new_zeros(0)])
    return Evidence(
        wsi=wsi,
        region=region.cpu(),
        patch=patch.cpu(),
        cell_token=cell_token.cpu(),
        cell=cell.cpu(),
    )
