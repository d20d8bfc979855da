"""Batches of slides for the GPU chain (``embed.slides_per_job``): which slides share a process."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from hwsi_model.samples import Sample


def _cohort_name(cohort: str | None) -> str:
    """A wildcard-safe name for a cohort (its text cleaned, plus a short hash of the original
    so that two cohorts cleaning to the same text stay apart)."""
    text = cohort or ""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40] or "sheet"
    return f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def slide_batches(samples: Mapping[str, Sample], size: int) -> dict[str, list[str]]:
    """``{batch: [slide_id, ...]}``: consecutive rows of the sheet, ``size`` at most, never
    mixing cohorts. A batch is named ``{cohort}-{hash}.{k}``, so a new cohort appended to the
    sheet forms new batches and leaves the existing ones as they were (rows appended to an
    existing cohort join its last batch, or start new ones once it is full)."""
    if size < 1:
        raise ValueError(f"slides_per_job must be >= 1, not {size}")
    by_cohort: dict[str, list[str]] = {}
    for sid, sample in samples.items():  # sheet order
        by_cohort.setdefault(_cohort_name(sample.cohort), []).append(sid)
    batches = {}
    for name, ids in by_cohort.items():
        for k in range(0, len(ids), size):
            batches[f"{name}.{k // size}"] = ids[k : k + size]
    return batches


def batch_rule_name(kind: str, batch: str) -> str:
    """The name of a batch's rule (``prepare_batch_{batch}``): a Python identifier, since each
    batch has its own rule (its outputs are its slides' outputs, which no wildcard can give)."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', batch)}"
