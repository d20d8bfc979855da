"""Rule ``tissue``: tissue mask of one slide (inputs/outputs from the ``snakemake`` object)."""

import sys

from hwsi_model.logs import run_reporting_errors
from hwsi_model.tiling.steps import tissue_step
from hwsi_model.tiling.tissue import TissueParams


def main(smk) -> int:
    return run_reporting_errors(
        lambda: tissue_step(
            smk.input.slide,
            smk.wildcards.slide,
            smk.output[0],
            TissueParams.from_config(smk.params.tissue),
            mpp_override=float(smk.params.mpp_override) or None,
            config_hash=smk.params.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
