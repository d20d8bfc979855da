"""Batch rules ``prepare_batch_*``: tissue masks and patch/region grids of several slides."""

import sys

from hwsi_model.data.layout import OutputLayout
from hwsi_model.jobs.prepare import PrepareSettings, prepare_batch
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    p = smk.params
    return run_reporting_errors(
        lambda: prepare_batch(
            [Sample(sid, path, float(mpp) or None) for sid, path, mpp in p.members],
            OutputLayout(smk.config["outdir"]),
            PrepareSettings.from_workflow(p.settings),
            on_slide_error=smk.config.get("on_slide_error", "skip"),
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
