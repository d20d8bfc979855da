"""Rule ``build_demo_encoder``: a tiny random ViT folder for the demo (nothing is downloaded)."""

import sys

from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    return run_reporting_errors(
        lambda: build_tiny_encoder(smk.output[0], seed=smk.params.seed), log_file=smk.log[0]
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
