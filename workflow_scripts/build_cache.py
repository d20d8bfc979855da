"""Rule ``build_cache``: assemble one slide's multi-scale cache."""

import sys

from hwsi_model.embed.steps import build_cache_step
from hwsi_model.logs import run_reporting_errors
from hwsi_model.selection import SelectionConfig, selection_rule


def main(smk) -> int:
    sel = smk.params.selection
    cfg = SelectionConfig(n_candidates=sel["n_candidates"], top_k=sel["top_k"], query=sel["query"])
    source = sel["query"] if sel["query"] == "slide_mean" else f"{sel['query']}:{sel['query_file']}"
    rule = selection_rule(cfg, source)
    return run_reporting_errors(
        lambda: build_cache_step(
            smk.wildcards.slide,
            smk.input.tiles,
            smk.input.embeddings,
            smk.input.selection,
            smk.input.cell_embeddings,
            smk.output[0],
            top_k=sel["top_k"],
            selection_rule=rule,
            config_hash=smk.params.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
