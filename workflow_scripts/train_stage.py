"""Rules ``train_stage1/2/3``: one training stage with DeepSpeed (heavy logic in
``hwsi_model.training``). A single process on the CPU or one GPU; ``torchrun`` over the job's
GPUs when the rule requests more than one."""

import sys
from pathlib import Path


def main(smk) -> int:
    from hwsi_model.logs import setup_logging
    from hwsi_model.training.launch import entry_args, launch, write_model_config

    setup_logging(smk.log[0])
    p = smk.params
    out = str(Path(smk.output.model).parent)
    model_config = None
    if p.stage == 1:
        model_config = write_model_config(p.model, Path(out) / "model_config.json")
    args = entry_args(
        stage=p.stage,
        manifest=smk.input.manifest,
        out=out,
        settings=dict(p.settings),
        reports=smk.input.get("reports"),
        instructions=list(smk.input.get("instructions", [])),
        init=smk.input.get("init"),
        model_config=model_config,
        llm=smk.input.get("llm") or p.llm,
        text_encoder=p.text_encoder,
        resume=p.resume,
        instruction_format=p.instruction_format,
    )
    return launch(args, gpus=int(smk.resources.get("gpu", 0)))


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 -- injected by Snakemake's script directive
