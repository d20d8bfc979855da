"""Rule ``tiling_summary``: one TSV row per slide from the tiles stores."""

import sys

from hwsi_model.logs import run_reporting_errors
from hwsi_model.tiling.steps import tiling_summary


def main(smk) -> int:
    return run_reporting_errors(
        lambda: tiling_summary(list(smk.input), smk.output[0]), log_file=smk.log[0]
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
