"""Rule ``train_demo_stardist``: a StarDist2D trained on the demo cohort's nucleus masks."""

import sys

from hwsi_model.cells.train import TrainParams, train_stardist
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    p = smk.params
    params = TrainParams(mpp=p.mpp, epochs=p.epochs, steps_per_epoch=p.steps_per_epoch)
    return run_reporting_errors(
        lambda: train_stardist(
            smk.input.gt_index, smk.params.samples, smk.output[0], params, threads=smk.threads
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
