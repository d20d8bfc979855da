"""Rule ``embed_cells``: per-nucleus embeddings of the selected patches."""

import sys

from hwsi_model.embed.extract import ExtractParams
from hwsi_model.embed.steps import embed_cells_step
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    p = smk.params
    return run_reporting_errors(
        lambda: embed_cells_step(
            smk.input.slide,
            smk.wildcards.slide,
            smk.input.tiles,
            smk.input.selection,
            smk.input.cells,
            p.encoder,
            p.checkpoint,
            smk.output[0],
            ExtractParams(**p.extract),
            top_k=p.top_k,
            mpp_override=float(p.mpp_override) or None,
            config_hash=p.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
