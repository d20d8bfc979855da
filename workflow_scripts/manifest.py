"""Rule ``manifest``: one table of the cohort's caches, and the slides excluded."""

import sys

from hwsi_model.data.manifest import write_manifest
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import read_sample_sheet


def main(smk) -> int:
    return run_reporting_errors(
        lambda: write_manifest(
            list(smk.input.caches),
            read_sample_sheet(smk.input.samples),
            smk.output.manifest,
            failures_tsv=smk.output.failures,
            missing=dict(smk.params.missing),
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
