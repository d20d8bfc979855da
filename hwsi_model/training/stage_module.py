"""What DeepSpeed wraps for one stage: :class:`StageModule` (stage 1: L_HC + L_CS in the
alignment space; stages 2-3: L_LM + the auxiliary losses in the LLM space)."""

from __future__ import annotations

import torch
from torch import nn

from hwsi_model.data.pairs import TrainBatch
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.mllm import HWSIModel, HWSIOutput
from hwsi_model.training.stage_config import StageConfig


def _stack_units(parts: list[dict[str, UnitEmbeddings]]) -> dict[str, UnitEmbeddings]:
    """Concatenate per-report ``[1, T_i, D]`` units into ``[B, max T, D]`` with masks."""
    out = {}
    for scale in parts[0]:
        T = max(p[scale].emb.shape[1] for p in parts)
        D = parts[0][scale].emb.shape[2]
        emb = parts[0][scale].emb.new_zeros(len(parts), T, D)
        mask = torch.zeros(len(parts), T, dtype=torch.bool, device=emb.device)
        for i, p in enumerate(parts):
            t = p[scale].emb.shape[1]
            emb[i, :t], mask[i, :t] = p[scale].emb[0], p[scale].mask[0]
        out[scale] = UnitEmbeddings(emb, mask)
    return out


class StageModule(nn.Module):
    """What DeepSpeed wraps: ``forward(TrainBatch) -> HWSIOutput`` for one stage.

    Stage 1 with a frozen text encoder encodes each report's views once and reuses them
    (the text encoder gets no gradient, so its outputs never change).
    """

    def __init__(self, model: HWSIModel, config: StageConfig):
        super().__init__()
        self.model = model
        self.stage = config.stage
        self.aux = config.aux_losses
        self._text_cache: dict[str, dict[str, UnitEmbeddings]] = {}

    def train(self, mode: bool = True) -> StageModule:
        """Frozen sub-models (text encoder unless trained, the LLM in stage 2) stay in eval mode:
        no dropout noise in features that get no gradient (and reproducible resumes)."""
        super().train(mode)
        te, llm = self.model.text_encoder, self.model.llm
        if te is not None and not te.trainable:
            te.eval()
        if llm is not None and self.stage == 2:
            llm.eval()
        return self

    def _stage1_text(self, batch: TrainBatch) -> dict[str, UnitEmbeddings]:
        te = self.model.text_encoder
        if te is None:
            raise RuntimeError("stage 1 needs a text encoder")
        if batch.views is None:
            raise ValueError("stage 1 needs a report for every slide")
        if te.trainable:
            return te.encode_views(batch.views)
        # One report per call, not a batch's new reports together: padding with other reports'
        # texts changes the embeddings in the last bits, and a resumed run (its cache filled in
        # other groups) would then end with weights other than the uninterrupted run's.
        parts = []
        for v in batch.views:
            key = v.paragraph
            if key not in self._text_cache:
                with torch.no_grad():
                    self._text_cache[key] = te.encode_views([v])
            parts.append(self._text_cache[key])
        return _stack_units(parts)

    def forward(self, batch: TrainBatch) -> HWSIOutput:
        device = next(self.model.visual.parameters()).device
        slides = batch.slides.to(device)
        if self.stage == 1:
            return self.model.alignment_losses(slides, text=self._stage1_text(batch))
        enc = {
            k: v.to(device)
            for k, v in self.model.processor(
                batch.questions, batch.answers, batch.histories
            ).items()
        }
        views = batch.views if self.aux else None
        return self.model(slides, **enc, views=views)
