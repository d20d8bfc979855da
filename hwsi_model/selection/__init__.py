"""Diagnostically relevant patch selection: diverse candidates per region, then top-k by a query
available at inference (slide mean, prompt bank or question), never the slide's report."""

from hwsi_model.selection.select import select_patches, selection_inputs
from hwsi_model.selection.settings import QUERY_MODES, SelectionConfig, selection_rule

_PROMPTS = ("DEFAULT_PROMPTS", "embed_prompts", "prompt_bank_id")


def __getattr__(name: str):
    # The prompt bank needs torch; the selection step itself does not (a job imports less).
    if name in _PROMPTS:
        from hwsi_model.selection import prompts

        return getattr(prompts, name)
    raise AttributeError(f"module 'hwsi_model.selection' has no attribute {name!r}")


__all__ = [
    "DEFAULT_PROMPTS",
    "QUERY_MODES",
    "SelectionConfig",
    "embed_prompts",
    "prompt_bank_id",
    "select_patches",
    "selection_inputs",
    "selection_rule",
]
