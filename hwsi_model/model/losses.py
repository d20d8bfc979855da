"""Losses of MLLM-HWSI: ``L = lm_weight * L_LM + hc_weight * L_HC + cs_weight * L_CS``.

- **L_HC** (:class:`HierarchicalContrastiveLoss`): per scale, a symmetric InfoNCE between slides'
  visual units and texts at the matching grain, with in-batch negatives (gathered across
  data-parallel ranks) and a learnable temperature per scale. The score of slide i against the
  text of slide j is a late-interaction (multiple-instance) match: for each text unit of j
  (key term, phrase, sentence) take its best visual unit(s) of i (cell tokens, patches, regions)
  and average over the text units. With one unit on each side (WSI - paragraph) it is the plain
  cosine, so all four scales share one code path.
- **L_CS** (:func:`cross_scale_consistency`): mean of ``1 - cos`` between adjacent scale
  summaries (cell-patch, patch-region, region-WSI); a scale's summary is the mean of its units.
- **L_LM** (:func:`causal_lm_loss`): next-token cross-entropy on answer tokens only (labels -100
  elsewhere).

The functions work in any space: the alignment space (stage 1) or the LLM hidden size (stages 2-3,
with the LLM's own token embeddings as the text side), so the auxiliary losses always have a
trainable path.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from hwsi_model.model.configuration import SCALES, LossConfig
from hwsi_model.model.hierarchy import UnitEmbeddings

#: Adjacent scale pairs compared by L_CS.
SCALE_PAIRS: tuple[tuple[str, str], ...] = (
    ("cell", "patch"),
    ("patch", "region"),
    ("region", "wsi"),
)


# -- negatives across data-parallel ranks -----------------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_units(emb: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather ``emb [B, U, D]`` and ``mask [B, U]`` across ranks; identity when not distributed.

    Ranks may differ in B and U: each rank pads to the maxima first (padded rows have an
    all-False mask and drop out of the loss). The local shard keeps its gradient (the gathered
    copies of other ranks carry none); since every rank computes the same global loss, the
    data-parallel gradient average is then the gradient of the global loss (up to the
    world-size factor that the usual averaging applies).

    Returns ``[W * B_max, U_max, D]`` and ``[W * B_max, U_max]``, the ranks' rows in rank order.
    """
    if not _distributed():
        return emb, mask
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([emb.shape[0], emb.shape[1]], device=emb.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    b_max = int(max(s[0] for s in sizes))
    u_max = int(max(s[1] for s in sizes))
    pad_b, pad_u = b_max - emb.shape[0], u_max - emb.shape[1]
    emb = F.pad(emb, (0, 0, 0, pad_u, 0, pad_b))
    mask = F.pad(mask, (0, pad_u, 0, pad_b), value=False)
    embs = [torch.empty_like(emb) for _ in range(world)]
    masks = [torch.empty_like(mask) for _ in range(world)]
    dist.all_gather(embs, emb.detach().contiguous())
    dist.all_gather(masks, mask.contiguous())
    embs[rank] = emb
    return torch.cat(embs), torch.cat(masks)


# -- L_HC -------------------------------------------------------------------------------------


def late_interaction_scores(
    visual: Tensor,
    visual_mask: Tensor,
    text: Tensor,
    text_mask: Tensor,
    topk: int = 1,
    max_elements: int = 2**26,
) -> Tensor:
    """Multiple-instance match of every slide against every text.

    Args:
        visual: ``[B, U, D]`` L2-normalised visual units; ``visual_mask [B, U] bool``.
        text: ``[B2, T, D]`` L2-normalised text units; ``text_mask [B2, T] bool``.
        topk: each text unit is scored by the mean of its ``topk`` best visual units.
        max_elements: bound on the ``[b, B2, T, U]`` similarity block computed at once (rows of
            ``visual`` are processed in chunks), so large gathered batches stay in memory.

    Returns:
        ``[B, B2]``: ``scores[i, j]`` = mean over text units t of text j of the mean of the
        ``topk`` best ``cos(visual_i,u, text_j,t)`` over the real units u of slide i. Rows or
        columns without any real unit are 0.
    """
    B, U = visual_mask.shape
    rows = max(1, max_elements // max(1, text.shape[0] * text.shape[1] * U))
    if rows < B:
        return torch.cat(
            [
                late_interaction_scores(
                    visual[i : i + rows], visual_mask[i : i + rows], text, text_mask, topk
                )
                for i in range(0, B, rows)
            ]
        )
    sim = torch.einsum("iud,jtd->ijtu", visual, text)  # [B, B2, T, U]
    sim = sim.masked_fill(~visual_mask[:, None, None, :], float("-inf"))
    k = max(1, min(topk, U))
    best = sim.topk(k, dim=-1).values  # [B, B2, T, k]
    n_real = visual_mask.sum(-1).clamp(min=1)[:, None, None, None]
    keep = torch.arange(k, device=visual.device) < n_real  # fewer than k units: use those there
    best = torch.where(keep, best, torch.zeros_like(best)).sum(-1) / n_real.clamp(max=k)[..., 0]
    best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    tm = text_mask[None].to(best.dtype)  # [1, B2, T]
    return (best * tm).sum(-1) / tm.sum(-1).clamp(min=1.0)


def symmetric_info_nce(scores: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP loss on a square ``[B, B]`` score matrix whose diagonal holds the matched pairs."""
    logits = scores * logit_scale
    labels = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class HierarchicalContrastiveLoss(nn.Module):
    """L_HC: symmetric late-interaction InfoNCE at each scale, averaged over the scales.

    Holds one learnable logit scale (1 / temperature) per scale, stored as its logarithm.
    """

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config
        init = torch.full((len(SCALES),), math.log(1.0 / config.init_temperature))
        self.log_logit_scale = nn.Parameter(init, requires_grad=config.learnable_temperature)

    def logit_scale(self, scale: str) -> Tensor:
        cap = math.log(self.config.max_logit_scale)
        return self.log_logit_scale[SCALES.index(scale)].clamp(max=cap).exp()

    def scale_loss(self, scale: str, visual: UnitEmbeddings, text: UnitEmbeddings) -> Tensor | None:
        """InfoNCE at one scale; ``None`` unless two slides or more have visual and text units."""
        v, vm, t, tm = visual.emb, visual.mask, text.emb, text.mask
        if self.config.gather_distributed:
            v, vm = gather_units(v, vm)
            t, tm = gather_units(t, tm)
        valid = vm.any(-1) & tm.any(-1)
        if int(valid.sum()) < 2:
            return None
        scores = late_interaction_scores(
            v[valid], vm[valid], t[valid], tm[valid], self.config.mil_topk
        )
        return symmetric_info_nce(scores, self.logit_scale(scale))

    def forward(
        self, visual: dict[str, UnitEmbeddings], text: dict[str, UnitEmbeddings]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean L_HC over the configured scales present in both dicts, and the per-scale values.

        ``visual[s]`` and ``text[s]`` must be L2-normalised and in the same space.
        """
        parts: dict[str, Tensor] = {}
        for scale in self.config.hc_scales:
            if scale in visual and scale in text:
                loss = self.scale_loss(scale, visual[scale], text[scale])
                if loss is not None:
                    parts[scale] = loss
        if not parts:
            return self.log_logit_scale.sum() * 0.0, parts
        return torch.stack(list(parts.values())).mean(), parts


# -- L_CS -------------------------------------------------------------------------------------


def scale_summary(units: UnitEmbeddings) -> tuple[Tensor, Tensor]:
    """Mean of a scale's real units: ``[B, D]`` and ``valid [B] bool`` (slide has such units)."""
    m = units.mask.to(units.emb.dtype)[..., None]
    summary = (units.emb * m).sum(1) / m.sum(1).clamp(min=1.0)
    return summary, units.mask.any(-1)


def cross_scale_consistency(units: dict[str, UnitEmbeddings]) -> Tensor:
    """L_CS: mean over adjacent scale pairs of the mean ``1 - cos`` of their summaries.

    Pairs where a scale is missing from ``units``, and slides without units at a scale, are left
    out. Returns 0 (with a graph) when no pair is available.
    """
    summaries = {s: scale_summary(u) for s, u in units.items()}
    terms = []
    for fine, coarse in SCALE_PAIRS:
        if fine in summaries and coarse in summaries:
            (a, va), (b, vb) = summaries[fine], summaries[coarse]
            valid = va & vb
            if valid.any():
                terms.append((1.0 - F.cosine_similarity(a[valid], b[valid], dim=-1)).mean())
    if not terms:
        return next(iter(units.values())).emb.sum() * 0.0
    return torch.stack(terms).mean()


# -- L_LM -------------------------------------------------------------------------------------


def causal_lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Next-token cross-entropy: ``logits [B, T, V]`` at t predict ``labels [B, T]`` at t + 1.

    Positions labelled ``ignore_index`` (prompt, visual tokens, padding) do not count; the mean is
    over the supervised (answer) tokens of the whole batch.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
    )


def combine_losses(
    config: LossConfig, lm: Tensor | None = None, hc: Tensor | None = None, cs: Tensor | None = None
) -> Tensor:
    """``lm_weight * lm + hc_weight * hc + cs_weight * cs`` over the parts that are given."""
    parts = [
        (config.lm_weight, lm),
        (config.hc_weight, hc),
        (config.cs_weight, cs),
    ]
    terms = [w * x for w, x in parts if x is not None and w != 0.0]
    if not terms:
        raise ValueError("no loss term to combine (all None or zero weight)")
    return torch.stack(terms).sum()
