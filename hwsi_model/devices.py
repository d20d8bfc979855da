"""Which torch device a command runs on: ``auto`` (CUDA when there is one, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA on a machine without it is a clear error. And
the LLM's weight dtype for ``llm_dtype: auto``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsi_model.errors import ConfigError

if TYPE_CHECKING:
    import torch


#: ``llm_dtype`` values (HWSIConfig): ``auto`` or a torch floating dtype's name.
LLM_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: The LLM weight dtype a training precision (StageConfig.precision) trains in.
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_llm_dtype(dtype: str = "auto") -> str:
    """``dtype``, or for ``auto``: ``bfloat16`` where CUDA with bf16 is available (half the
    memory of float32: a 7B LLM is 15 GB, not 30), else ``float32`` (CPUs compute bf16 slowly
    and less exactly)."""
    if dtype not in LLM_DTYPES:
        raise ConfigError(f"llm_dtype {dtype!r} is not one of {LLM_DTYPES}")
    if dtype != "auto":
        return dtype
    import torch  # here: the model's config reads LLM_DTYPES without importing torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def resolve_device(device: str = "auto") -> torch.device:
    """The device for ``device`` (``auto``: CUDA when available, else the CPU)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this machine has no CUDA device; use cpu or auto")
    return dev
