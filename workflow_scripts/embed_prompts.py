"""Rule ``embed_prompts``: the selection's prompt bank embedded by the patch encoder's text tower
(``embed.selection.query: prompts`` without a ``query_file``)."""

import sys

from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    from hwsi_model.selection.text_queries import write_prompt_queries

    p = smk.params
    return run_reporting_errors(
        lambda: write_prompt_queries(p.encoder, p.checkpoint, smk.output[0], p.prompts),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
