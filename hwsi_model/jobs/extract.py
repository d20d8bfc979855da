"""``extract_slide``: a slide's patch embeddings, selection, nuclei, cell embeddings and cache.

One process runs the five steps in order, so the interpreter, torch, TensorFlow and the models
are paid once per slide; the encoder serves both embedding steps and each model is loaded only
when a step that needs it runs (a job whose patch embeddings are current never loads it for
them). ``cells.patches: selected`` segments the selected patches, ``all`` every tissue patch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic
from hwsi_model.cells.model_registry import load_stardist, resolve_model_folder
from hwsi_model.cells.segment import SegmentParams
from hwsi_model.cells.steps import cells_inputs, segment_step
from hwsi_model.data.failures import SlideFailure
from hwsi_model.data.layout import OutputLayout
from hwsi_model.embed.params import ExtractParams
from hwsi_model.embed.steps import (
    EncoderRun,
    build_cache_step,
    cache_inputs,
    cell_embedding_inputs,
    embed_cells_step,
    embed_patches_step,
    patch_embedding_inputs,
)
from hwsi_model.jobs.isolation import require_not_failed, run_batch
from hwsi_model.jobs.steps import JobSteps, Once
from hwsi_model.samples import Sample
from hwsi_model.selection.settings import SelectionConfig, selection_rule
from hwsi_model.selection.steps import select_step, selection_csv_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSettings:
    """What the five steps run with (config ``embed`` and ``cells``) and each step's hash."""

    encoder: EncoderRun
    selection: SelectionConfig
    query_file: str | None
    cells_model: str  # a StarDist folder or pretrained name
    cells_mode: str  # "selected" | "all"
    segment: SegmentParams
    hashes: Mapping[str, str]  # embeddings, selection, cells, cell_embeddings, cache
    threads: int | None = None

    @classmethod
    def from_workflow(cls, s: Mapping[str, Any], threads: int | None = None) -> ExtractSettings:
        """From the rule's ``settings`` param (rules/common.smk ``EXTRACT_SETTINGS``)."""
        sel = s["selection"]
        cells = dict(s["cells"])
        mode = cells.pop("patches")
        segment = SegmentParams(**cells)
        if mode == "selected":  # scattered patches: one window each
            segment = replace(segment, block=1)
        return cls(
            encoder=EncoderRun(s["encoder"], s["checkpoint"], ExtractParams(**s["extract"])),
            selection=SelectionConfig(
                n_candidates=sel["n_candidates"], top_k=sel["top_k"], query=sel["query"]
            ),
            query_file=sel.get("query_file") or None,
            cells_model=s["cells_model"],
            cells_mode=mode,
            segment=segment,
            hashes=dict(s["hashes"]),
            threads=threads,
        )

    @property
    def selection_rule(self) -> dict:
        q = self.selection.query
        return selection_rule(self.selection, q if q == "slide_mean" else f"{q}:{self.query_file}")


@dataclass(frozen=True)
class ExtractOutputs:
    embeddings: str | Path
    selection: str | Path  # CSV; its provenance record beside it (.json)
    cells: str | Path
    cells_qc: str | Path
    cells_geojson: str | Path
    cell_embeddings: str | Path
    cache: str | Path

    @classmethod
    def of(cls, layout: OutputLayout, slide: str) -> ExtractOutputs:
        """A slide's outputs in the workflow's layout."""
        return cls(
            layout.embeddings(slide),
            layout.selection(slide),
            layout.cells(slide),
            layout.qc("cells", slide),
            layout.cells_geojson(slide),
            layout.cell_embeddings(slide),
            layout.cache(slide),
        )


class ExtractModels:
    """The encoder and the StarDist model of a job, each loaded when a step first needs it;
    pass one to :func:`extract_slide` for several slides to load them once."""

    def __init__(self, settings: ExtractSettings) -> None:
        self.encoder = Once("encoder", settings.encoder.loaded_once)
        self.stardist = Once(
            "stardist", lambda: load_stardist(settings.cells_model, threads=settings.threads)
        )


def extract_slide(
    sample: Sample,
    tiles: str | Path,
    out: ExtractOutputs,
    settings: ExtractSettings,
    models: ExtractModels | None = None,
) -> JobSteps:
    """The GPU chain of one slide; a step whose output is current is kept. Raises
    :class:`~hwsi_model.jobs.isolation.UpstreamFailedError` when ``tiles`` is the placeholder
    of a failed ``prepare_slide``."""
    require_not_failed(tiles)
    steps, h = JobSteps(sample.slide_id), settings.hashes
    models = models or ExtractModels(settings)
    encoder, stardist = models.encoder, models.stardist
    top_k = settings.selection.top_k
    steps.step(
        "embed_patches",
        out.embeddings,
        h["embeddings"],
        patch_embedding_inputs(sample, tiles, settings.encoder),
        lambda: embed_patches_step(
            sample, tiles, encoder(), out.embeddings, config_hash=h["embeddings"]
        ),
    )
    steps.step(
        "select_patches",
        out.selection,
        h["selection"],
        selection_csv_inputs(out.embeddings, tiles, settings.query_file),
        lambda: select_step(
            out.embeddings,
            tiles,
            out.selection,
            n_candidates=settings.selection.n_candidates,
            top_k=top_k,
            query=settings.selection.query,
            query_file=settings.query_file,
            config_hash=h["selection"],
        ),
    )
    patch_list = out.selection if settings.cells_mode == "selected" else None
    steps.step(
        "segment_cells",
        out.cells,
        h["cells"],
        cells_inputs(sample.path, tiles, patch_list, resolve_model_folder(settings.cells_model)),
        lambda: segment_step(
            sample.path,
            sample.slide_id,
            tiles,
            patch_list,
            settings.cells_model,
            out.cells,
            out.cells_qc,
            settings.segment,
            geojson=out.cells_geojson,
            mpp_override=sample.mpp,
            threads=settings.threads,
            config_hash=h["cells"],
            loaded=stardist(),
        ),
        also=[out.cells_qc, out.cells_geojson],
    )
    steps.step(
        "embed_cells",
        out.cell_embeddings,
        h["cell_embeddings"],
        cell_embedding_inputs(sample, tiles, out.selection, out.cells, settings.encoder),
        lambda: embed_cells_step(
            sample,
            tiles,
            out.selection,
            out.cells,
            encoder(),
            out.cell_embeddings,
            top_k=top_k,
            config_hash=h["cell_embeddings"],
        ),
    )
    steps.step(
        "build_cache",
        out.cache,
        h["cache"],
        cache_inputs(tiles, out.embeddings, out.selection, out.cell_embeddings),
        lambda: build_cache_step(
            sample.slide_id,
            tiles,
            out.embeddings,
            out.selection,
            out.cell_embeddings,
            out.cache,
            top_k=top_k,
            selection_rule=settings.selection_rule,
            config_hash=h["cache"],
        ),
    )
    steps.finish()
    return steps


def extract_batch(
    samples: list[Sample],
    layout: OutputLayout,
    settings: ExtractSettings,
    record: str | Path,
    on_slide_error: str = "skip",
) -> dict[str, dict]:
    """The GPU chain of several slides in one process (``embed.slides_per_job``), the encoder
    and StarDist model loaded once, each slide isolated: a slide that fails, or whose
    ``prepare_batch`` failed, gets failure placeholders and the others go on (no model is
    loaded for a slide already excluded). Writes ``record`` (JSON): per slide the steps run and
    kept with their seconds, or why it was excluded; returns the same dict."""
    models = ExtractModels(settings)

    def run_one(sample: Sample) -> JobSteps:
        sid = sample.slide_id
        return extract_slide(
            sample, layout.tiles(sid), ExtractOutputs.of(layout, sid), settings, models
        )

    def outputs_of(sid: str) -> list[tuple[str, bool]]:
        return layout.job_outputs("extract", sid)

    results = {}
    for sid, r in run_batch(
        "extract_batch", samples, run_one, outputs_of, layout.outdir, on_slide_error
    ).items():
        if isinstance(r, SlideFailure):
            results[sid] = {"excluded": r.describe(), "error": r.first.error}
        else:
            results[sid] = {"ran": r.ran, "kept": r.kept, "seconds": round(r.seconds, 3)}
    write_text_atomic(record, json.dumps({"slides": results}, indent=1) + "\n")
    return results
