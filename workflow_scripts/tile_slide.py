"""Rule ``tiles``: patch/region grid of one slide (inputs/outputs from the ``snakemake`` object)."""

import sys

from hwsi_model.logs import run_reporting_errors
from hwsi_model.tiling.steps import tiling_step


def main(smk) -> int:
    p = smk.params
    return run_reporting_errors(
        lambda: tiling_step(
            smk.wildcards.slide,
            smk.input.tissue,
            smk.output.store,
            smk.output.qc,
            mpp=p.mpp,
            patch_size=p.patch_size,
            region_size=p.region_size,
            min_tissue_fraction=p.min_tissue_fraction,
            mpp_tolerance=p.mpp_tolerance,
            config_hash=p.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
