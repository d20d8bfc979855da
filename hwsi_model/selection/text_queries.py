"""The selection's prompt queries from the patch encoder's own text tower.

With ``embed.selection.query: prompts`` and no ``query_file``, the prompt bank
(``embed.selection.prompts``, default :data:`~hwsi_model.selection.prompts.DEFAULT_PROMPTS`) is
embedded once per cohort by the text tower of the patch encoder (an encoder of the ``clip``
family: PLIP, QuiltNet, CLIP), in the space of its image embeddings, so each patch is scored by
its best cosine to a diagnostic finding instead of by its typicality for the slide. An encoder
without a text tower is one clear error naming the settings to change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwsi_model.atomic import atomic_output
from hwsi_model.encoders import load_encoder
from hwsi_model.errors import ConfigError
from hwsi_model.selection.prompts import DEFAULT_PROMPTS, embed_prompts, prompt_bank_id


def write_prompt_queries(
    encoder: str,
    checkpoint: str | Path,
    out_npy: str | Path,
    prompts: Sequence[str] = (),
    device: str = "cpu",
) -> np.ndarray:
    """Embed ``prompts`` (empty: the default bank) with ``encoder``'s text tower and write
    ``out_npy`` (unit-norm float32 ``[Q, D]``) and, beside it (``.json``), the prompts, their
    bank id and the encoder's name and weights hash. Returns the queries."""
    prompts = list(prompts) or list(DEFAULT_PROMPTS)
    enc = load_encoder(encoder, checkpoint, device)
    if not enc.has_text_tower:
        raise ConfigError(
            f"embed.selection.query: prompts needs embed.selection.query_file (.npy [Q, D] in the "
            f"patch space) or an encoder with a text tower (the clip family: clip, plip); "
            f"{encoder!r} has none"
        )
    queries = embed_prompts(enc.encode_text, prompts)
    if queries.shape[1] != enc.embed_dim:
        raise ConfigError(
            f"{encoder}: text tower gives {queries.shape[1]}-d, patches {enc.embed_dim}"
        )
    out = Path(out_npy)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.save(f, queries)
    about = {
        "encoder": encoder,
        "checkpoint_hash": enc.checkpoint_hash,
        "prompt_bank": prompt_bank_id(prompts),
        "prompts": prompts,
        "shape": list(queries.shape),
    }
    with atomic_output(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(about, indent=1) + "\n")
    return queries
