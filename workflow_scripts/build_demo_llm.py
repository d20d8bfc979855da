"""Rule ``build_demo_llm``: the demo's tiny causal LM from the training split's text
(:func:`hwsi_model.demo.llm.build_demo_llm_from_files`; nothing is downloaded)."""

import sys

from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    from hwsi_model.demo.llm import build_demo_llm_from_files

    return run_reporting_errors(
        lambda: build_demo_llm_from_files(
            smk.output[0],
            list(smk.input.instructions),
            smk.input.reports,
            smk.input.manifest,
            split="train",
            seed=smk.params.seed,
        ),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
