"""Which torch device a command runs on: ``auto`` (CUDA when there is one, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA on a machine without it is a clear error."""

from __future__ import annotations

import torch

from hwsi_model.errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """The device for ``device`` (``auto``: CUDA when available, else the CPU)."""
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
