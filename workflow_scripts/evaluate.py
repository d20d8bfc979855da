"""Rule ``evaluate``: the method and its baselines on the test split
(:func:`hwsi_model.evaluation.pipeline.run_evaluation`)."""

import logging
import sys

from hwsi_model.evaluation.pipeline import (
    EvaluationInputs,
    ReportSettings,
    run_evaluation,
    summary_lines,
)
from hwsi_model.evaluation.runner import EvalConfig
from hwsi_model.evaluation.statistics import StatsSettings
from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    p = smk.params
    cfg = EvalConfig(
        batch_size=p.batch_size,
        num_beams=p.num_beams,
        bertscore_model=p.bertscore_model,
        device=p.device,
    )

    def run() -> None:
        inputs = EvaluationInputs(
            smk.input.model,
            smk.input.manifest,
            list(smk.input.test),
            baselines={name: smk.input[f"baseline_{b}"] for name, b in p.baselines.items()},
            stage1_dir=smk.input.stage1,
            reports=smk.input.reports,
            class_prompts=dict(p.class_prompts) or None,
            annotations=smk.input.get("annotations"),
            curves={f"stage {n + 1}": c for n, c in enumerate(smk.input.curves)},
            split=p.split,
            fmt=p.format,
            failures=smk.input.failures,
            train_files=list(smk.input.train),
            task_groups=p.task_groups,
        )
        report = ReportSettings(evidence_slides=p.evidence_slides)
        stats = StatsSettings(n_resamples=p.bootstrap_resamples)
        doc = run_evaluation(inputs, smk.output[0], cfg, report, stats)
        for line in summary_lines(doc):
            logging.getLogger("evaluate").info("%s", line)

    return run_reporting_errors(run, log_file=smk.log[0])


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
