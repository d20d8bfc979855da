"""``prepare_slide``: a slide's tissue mask, then its patch/region grid and tiling QC picture;
``prepare_batch``: the same for several slides in one process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsi_model.data.failures import SlideFailure
from hwsi_model.data.layout import OutputLayout
from hwsi_model.jobs.isolation import run_batch
from hwsi_model.jobs.steps import JobSteps
from hwsi_model.samples import Sample
from hwsi_model.tiling.steps import tiles_inputs, tiling_step, tissue_step
from hwsi_model.tiling.tissue import TissueParams
from hwsi_model.workflow_config import config_hash


@dataclass(frozen=True)
class PrepareSettings:
    """Tissue detection and grid parameters (config ``tissue``, ``mpp``, ``patch_size``, ...);
    lengths in um, ``mpp`` in um/px, ``patch_size`` in px at ``mpp``."""

    tissue: TissueParams
    mpp: float
    patch_size: int
    region_size: int
    mpp_tolerance: float
    min_tissue_fraction: float
    tissue_hash: str
    tiles_hash: str

    @classmethod
    def from_workflow(cls, s: Mapping[str, Any]) -> PrepareSettings:
        """From the rule's ``settings`` param (rules/common.smk ``PREPARE_SETTINGS``)."""
        return cls(**{**s, "tissue": TissueParams.from_config(s["tissue"])})


@dataclass(frozen=True)
class PrepareOutputs:
    tissue: str | Path  # folder: mask.png, thumbnail.jpg, tissue.json
    tiles: str | Path  # Zarr v3 store
    qc: str | Path  # tiling QC picture (PNG)

    @classmethod
    def of(cls, layout: OutputLayout, slide: str) -> PrepareOutputs:
        """A slide's outputs in the workflow's layout."""
        return cls(*(path for path, _ in layout.job_outputs("prepare", slide)))


def prepare_slide(sample: Sample, out: PrepareOutputs, settings: PrepareSettings) -> JobSteps:
    """Tissue, then tiles; a step whose output is current is kept (returns what ran)."""
    steps = JobSteps(sample.slide_id)
    # The sheet's mpp decides the resolution the mask is computed at: part of the step's key.
    tissue_key = config_hash({"tissue": settings.tissue_hash, "mpp_override": sample.mpp})
    steps.step(
        "tissue",
        out.tissue,
        tissue_key,
        {"slide": sample.path},
        lambda: tissue_step(
            sample.path, sample.slide_id, out.tissue, settings.tissue, sample.mpp, tissue_key
        ),
    )
    steps.step(
        "tiles",
        out.tiles,
        settings.tiles_hash,
        tiles_inputs(sample.path, out.tissue),
        lambda: tiling_step(
            sample.slide_id,
            out.tissue,
            out.tiles,
            out.qc,
            mpp=settings.mpp,
            patch_size=settings.patch_size,
            region_size=settings.region_size,
            min_tissue_fraction=settings.min_tissue_fraction,
            mpp_tolerance=settings.mpp_tolerance,
            config_hash=settings.tiles_hash,
        ),
        also=[out.qc],
    )
    steps.finish()
    return steps


def prepare_batch(
    samples: list[Sample],
    layout: OutputLayout,
    settings: PrepareSettings,
    on_slide_error: str = "skip",
) -> dict[str, JobSteps | SlideFailure]:
    """:func:`prepare_slide` of several slides in one process (``embed.slides_per_job``), each
    isolated: a slide that fails gets failure placeholders and the others go on."""
    return run_batch(
        "prepare_batch",
        samples,
        lambda s: prepare_slide(s, PrepareOutputs.of(layout, s.slide_id), settings),
        lambda sid: layout.job_outputs("prepare", sid),
        outdir=layout.outdir,
        on_slide_error=on_slide_error,
    )
