"""Rule ``convert_packaged_llm``: a packaged GGUF LLM as a Hugging Face folder
(:func:`hwsi_model.model.packaged_llm.convert_packaged_llm`)."""

import sys

from hwsi_model.logs import run_reporting_errors


def main(smk) -> int:
    from hwsi_model.model.packaged_llm import convert_packaged_llm

    return run_reporting_errors(
        lambda: convert_packaged_llm(smk.wildcards.packaged, smk.output[0]),
        log_file=smk.log[0],
    )


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
