"""Settings of the diagnostically relevant patch selection, and the rule recorded with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUERY_MODES = ("slide_mean", "prompts", "question")
RULE_VERSION = 1


@dataclass(frozen=True)
class SelectionConfig:
    """Per region: ``n_candidates`` max-min diverse patches, then the ``top_k`` most relevant.

    Attributes:
        n_candidates: size of the diverse candidate set (greedy farthest point on cosine).
        top_k: patches kept per region, ordered by relevance to the query.
        query: ``"slide_mean"`` (cosine to the slide's mean patch embedding), ``"prompts"`` (max
            cosine over a bank of diagnostic text prompts embedded into the patch space) or
            ``"question"`` (cosine to a query vector available at inference, e.g. the question).
    """

    n_candidates: int = 32
    top_k: int = 16
    query: str = "slide_mean"

    def __post_init__(self) -> None:
        if self.query not in QUERY_MODES:
            raise ValueError(f"selection query must be one of {QUERY_MODES}, got {self.query!r}")
        if self.top_k < 1 or self.n_candidates < self.top_k:
            raise ValueError(
                f"need 1 <= top_k <= n_candidates, got top_k={self.top_k}, "
                f"n_candidates={self.n_candidates}"
            )


def selection_rule(config: SelectionConfig, query_source: str) -> dict[str, Any]:
    """JSON-able description of the rule, recorded in the store's attributes.

    Args:
        config: the selection settings.
        query_source: where the query vectors came from, e.g. ``"slide_mean"``,
            ``"prompts:default@<bank id>"`` (see :func:`~hwsi_model.selection.prompt_bank_id`) or
            ``"question:<text encoder>"``.
    """
    return {
        "version": RULE_VERSION,
        "method": "maxmin-diverse-candidates-then-topk-relevance",
        "n_candidates": config.n_candidates,
        "top_k": config.top_k,
        "query": config.query,
        "query_source": query_source,
        "similarity": "cosine",
        "diversity_start": "patch closest to the region mean embedding",
        "relevance": "max cosine over the query vectors",
        "ties": "lowest row index first",
        "padding": -1,
        # The rule is a function of patch embeddings, region offsets and query vectors only:
        # no report, caption or answer of the slide can reach it (design brief, section 2.3).
        "uses_slide_text": False,
    }
