"""The launch environment of a training process: single-process defaults for the variables a
launcher (torchrun, deepspeed, srun) sets, and DeepSpeed's distributed start-up."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_launch_env() -> None:
    """Single-process defaults for ``RANK``/``WORLD_SIZE``/... when no launcher set them, and a
    persistent ``TORCH_EXTENSIONS_DIR`` for DeepSpeed's compiled ops."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "hwsi" / "torch_extensions")
    )


def init_deepspeed_distributed():
    """``deepspeed.init_distributed`` (gloo on CPU); a single CPU process skips compiling the
    shared-memory all-reduce op, which only serves several processes. Returns ``(rank, world)``."""
    ensure_launch_env()
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if int(os.environ["WORLD_SIZE"]) == 1 and get_accelerator().device_name() == "cpu":
        compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
        if isinstance(compatible, dict):
            compatible["deepspeed_shm_comm"] = False
    deepspeed.init_distributed()
    return torch.distributed.get_rank(), torch.distributed.get_world_size()
