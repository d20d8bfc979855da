"""Rule ``select_patches``: diagnostically relevant patches per region."""

import sys

from hwsi_model.logs import run_reporting_errors
from hwsi_model.selection.steps import select_step


def main(smk) -> int:
    s = smk.params.selection
    return run_reporting_errors(
        lambda: select_step(
            smk.input.embeddings,
            smk.input.tiles,
            smk.output[0],
            n_candidates=s["n_candidates"],
            top_k=s["top_k"],
            query=s["query"],
            query_file=s["query_file"] or None,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
