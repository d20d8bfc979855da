"""Rule ``embed_patches``: encoder embeddings of all tissue patches of one slide."""

import sys

from hwsi_model.embed.extract import ExtractParams
from hwsi_model.embed.steps import EncoderRun, embed_patches_step
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    p = smk.params
    return run_reporting_errors(
        lambda: embed_patches_step(
            Sample(smk.wildcards.slide, smk.input.slide, float(p.mpp_override) or None),
            smk.input.tiles,
            EncoderRun(p.encoder, p.checkpoint, ExtractParams(**p.extract)),
            smk.output[0],
            config_hash=p.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
