"""Rule ``build_cache``: assemble one slide's multi-scale cache."""

import sys

from hwsi_model.embed.steps import build_cache_step
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    sel = smk.params.selection
    rule = {k: sel[k] for k in ("n_candidates", "top_k", "query")}
    rule["never_uses"] = "the slide's report or answers"
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
