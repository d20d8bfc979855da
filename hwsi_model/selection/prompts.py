"""The default bank of diagnostic text prompts, and its embedding into the patch space.

Scoring patches against prompts only makes sense when text and patch embeddings share a space:
a vision-language patch encoder (CONCH v1, whose image embedding is its contrastive projection)
with its own text tower, or a text encoder followed by a trained text-to-patch projector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

# Short, generic H&E findings across organs: tumour, immune, stroma, necrosis, structures.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "tumour cells with enlarged pleomorphic nuclei",
    "invasive carcinoma infiltrating the stroma",
    "sheets of poorly differentiated malignant cells",
    "mitotic figures",
    "atypical glandular structures",
    "normal glandular structures",
    "dense lymphocytic infiltrate",
    "tertiary lymphoid structure with germinal centre",
    "necrosis",
    "haemorrhage",
    "normal stroma",
    "desmoplastic stroma",
    "fibrosis",
    "adipose tissue",
    "blood vessels",
    "smooth muscle",
    "squamous epithelium with keratinisation",
    "mucin",
    "calcification",
    "perineural invasion",
    "lymphovascular invasion",
    "inflammatory cells and neutrophils",
)

TextEncode = Callable[[list[str]], torch.Tensor | np.ndarray]


def prompt_bank_id(prompts: Sequence[str]) -> str:
    """sha256[:12] of the prompts (in order), to record which bank a selection used."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:12]


def embed_prompts(
    text_encoder: TextEncode,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    projector: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Embed ``prompts`` -> unit-norm float32 ``[Q, D]`` query vectors for ``query="prompts"``.

    Args:
        text_encoder: a :class:`hwsi_model.model.text_encoder.TextEncoder`, or any callable
            ``list[str] -> [Q, D_t]`` (e.g. CONCH's ``encode_text`` behind its tokenizer).
        prompts: the prompt bank (default :data:`DEFAULT_PROMPTS`).
        projector: optional ``[Q, D_t] -> [Q, D]`` map into the patch embedding space (e.g. the
            trained text-side alignment projection); ``None`` when the text encoder already
            embeds into that space.
    """
    if not prompts:
        raise ValueError("the prompt bank is empty")
    with torch.no_grad():
        emb = text_encoder(list(prompts))
        emb = torch.as_tensor(emb).float()
        if projector is not None:
            emb = projector(emb).float()
        emb = torch.nn.functional.normalize(emb, dim=-1)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(f"text encoder returned {tuple(emb.shape)} for {len(prompts)} prompts")
    return emb.cpu().numpy().astype(np.float32)
