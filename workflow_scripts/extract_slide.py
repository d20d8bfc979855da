"""Rule ``extract_slide``: embeddings, selection, nuclei, cell embeddings and cache of one slide."""

import sys

from hwsi_model.jobs.extract import ExtractOutputs, ExtractSettings, extract_slide
from hwsi_model.jobs.isolation import run_isolated
from hwsi_model.logs import run_reporting_errors
from hwsi_model.samples import Sample


def main(smk) -> int:
    o = smk.output
    sample = Sample(smk.wildcards.slide, smk.input.slide, float(smk.params.mpp_override) or None)
    outputs = ExtractOutputs(
        o.embeddings,
        o.selection,
        o.cells,
        o.cells_qc,
        o.cells_geojson,
        o.cell_embeddings,
        o.cache,
    )
    return run_reporting_errors(
        lambda: run_isolated(
            "extract_slide",
            sample,
            list(o),
            lambda: extract_slide(
                sample,
                smk.input.tiles,
                outputs,
                ExtractSettings.from_workflow(smk.params.settings, threads=smk.threads),
            ),
            outdir=smk.config["outdir"],
            on_slide_error=smk.config.get("on_slide_error", "skip"),
            folders=[o.embeddings, o.cells, o.cell_embeddings, o.cache],
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
