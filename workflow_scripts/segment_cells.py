"""Rule ``segment_cells``: StarDist nuclei of one slide's patches."""

import sys

from hwsi_model.cells.segment import SegmentParams
from hwsi_model.cells.steps import segment_step
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    p = smk.params
    cells = dict(p.cells)
    mode = cells.pop("patches")
    params = SegmentParams(**cells)
    if mode == "selected":
        params = SegmentParams(**{**cells, "block": 1})
    return run_reporting_errors(
        lambda: segment_step(
            smk.input.slide,
            smk.wildcards.slide,
            smk.input.tiles,
            smk.input.get("patch_list") if mode == "selected" else None,
            p.model,
            smk.output.store,
            smk.output.qc,
            params,
            geojson=smk.output.geojson,
            mpp_override=float(p.mpp_override) or None,
            threads=smk.threads,
            config_hash=smk.params.config_hash,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
