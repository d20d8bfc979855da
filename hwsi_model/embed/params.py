"""Settings of the embedding engine (no torch: the workflow's jobs read them before deciding
whether a step needs torch at all)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractParams:
    """Loader and compute settings (see config ``embed``)."""

    rows_per_item: int = 64  # patches per loader item (a band of one region)
    num_workers: int = 2
    device: str = "auto"  # "auto": cuda when available
    precision: str = "auto"  # "auto": bf16 on cuda, fp32 on cpu; or fp32/bf16/fp16
