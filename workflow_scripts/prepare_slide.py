"""Rule ``prepare_slide``: tissue mask and patch/region grid of one slide."""

import sys

from hwsi_model.jobs.prepare import PrepareOutputs, PrepareSettings, prepare_slide
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    o = smk.output
    return run_reporting_errors(
        lambda: prepare_slide(
            Sample(smk.wildcards.slide, smk.input.slide, float(smk.params.mpp_override) or None),
            PrepareOutputs(o.tissue, o.tiles, o.qc),
            PrepareSettings.from_workflow(smk.params.settings),
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
