"""Rule ``train``: one training run with DeepSpeed (heavy logic in ``hwsi_model.training``).
In this process on the CPU or one GPU; ``torchrun`` over the job's GPUs when the rule requests
more than one (the settings then travel as one validated file)."""

import sys
from pathlib import Path


def main(smk) -> int:
    from hwsi_model.logs import setup_logging
    from hwsi_model.training.launch import StageRun, launch

    setup_logging(smk.log[0])
    p = smk.params
    run = StageRun.from_settings(
        settings=dict(p.settings),
        manifest=smk.input.manifest,
        out=str(Path(smk.output.model).parent),
        reports=smk.input.get("reports"),
        instructions=list(smk.input.get("instructions", [])),
        init=smk.input.get("init"),
        model=p.run["model"],
        llm=smk.input.get("llm") or p.run["llm"],
        text_encoder=p.run["text_encoder"],
        resume=p.resume,
        instruction_format=p.instruction_format,
    )
    return launch(run, gpus=int(smk.resources.get("gpu", 0)))


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
