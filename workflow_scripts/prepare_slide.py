"""Rule ``prepare_slide``: tissue mask and patch/region grid of one slide."""

import sys

from hwsi_model.jobs.isolation import run_isolated
from hwsi_model.jobs.prepare import PrepareOutputs, PrepareSettings, prepare_slide
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    o = smk.output
    sample = Sample(smk.wildcards.slide, smk.input.slide, float(smk.params.mpp_override) or None)
    return run_reporting_errors(
        lambda: run_isolated(
            "prepare_slide",
            sample,
            list(o),
            lambda: prepare_slide(
                sample,
                PrepareOutputs(o.tissue, o.tiles, o.qc),
                PrepareSettings.from_workflow(smk.params.settings),
            ),
            outdir=smk.config["outdir"],
            on_slide_error=smk.config.get("on_slide_error", "skip"),
            folders=[o.tissue, o.tiles],
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
