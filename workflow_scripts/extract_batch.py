"""Batch rules ``extract_batch_*``: the GPU chains of several slides in one process."""

import sys

from hwsi_model.data.layout import layout_of_batch_record
from hwsi_model.jobs.extract import ExtractSettings, extract_batch
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    p = smk.params
    return run_reporting_errors(
        lambda: extract_batch(
            [Sample(sid, path, float(mpp) or None) for sid, path, mpp in p.members],
            layout_of_batch_record(smk.output.record),
            ExtractSettings.from_workflow(p.settings, threads=smk.threads),
            smk.output.record,
            on_slide_error=smk.config.get("on_slide_error", "skip"),
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
