"""Rule ``patch_list``: interim list of patches to segment (most tissue per region)."""

import sys

from hwsi_model.cells.steps import interim_patch_list
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    return run_reporting_errors(
        lambda: interim_patch_list(smk.input.tiles, smk.output[0], smk.params.per_region),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
