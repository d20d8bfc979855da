"""The output layout: every path the workflow writes under ``outdir``, in one place.

The rules, ``hwsi check``, ``hwsi ask`` and the CLI build paths with :class:`OutputLayout`
only, so a path is never spelt twice. A method with a ``slide`` argument takes a slide id or a
Snakemake wildcard (``"{slide}"``) and returns a string, so the rules can use it as a pattern.

=================================  ============================================================
path                               what (module that reads and writes it)
=================================  ============================================================
``tissue/{slide}/``                mask.png, thumbnail.jpg, tissue.json (:mod:`hwsi_model.tiling`)
``tiles/{slide}.zarr``             patch grid (:mod:`hwsi_model.data.stores.tiles`)
``tiles/summary.tsv``              one row per slide
``embeddings/{slide}.zarr``        patch embeddings (:mod:`hwsi_model.data.stores.patch_embeddings`)
``selection/{slide}.csv``          selected patches (:mod:`hwsi_model.data.stores.selection`),
                                   ``.json``: its provenance record
``cells/{slide}.zarr``             nuclei (:mod:`hwsi_model.data.stores.cells`), ``.geojson``
``cell_embeddings/{slide}.zarr``   cell embeddings (:mod:`hwsi_model.data.stores.cell_embeddings`)
``cache/{slide}.zarr``             multi-scale cache (:mod:`hwsi_model.data.stores.cache`)
``selection_queries.npy``          the selection's prompt bank embedded by the encoder's text
                                   tower (``embed.selection.query: prompts``; ``.json``: what)
``manifest.csv``                   the cohort's caches (:mod:`hwsi_model.data.manifest`)
``failures.tsv``                   slides excluded because a job failed on them, and why
                                   (:mod:`hwsi_model.data.failures`)
``qc/{step}/{slide}.png``          QC pictures
``models/{name}/``                 models the workflow builds (demo encoder, StarDist, LLM)
``training/...``                   model folders, checkpoints, loss curves per stage
``evaluation/``                    metrics.json, report.html, predictions, slide pages
``logs/{job}/{slide}.log``         one log per job (``prepare_slide``, ``extract_slide``) and slide;
                                   ``logs/{prepare,extract}_batch/{batch}.log`` per batch
``batches/extract/{batch}.json``  what a batch of GPU chains ran, per slide (``slides_per_job``)
``benchmarks/{job}/{slide}.tsv``   Snakemake's job timing (wall s, peak memory) per job and slide
                                   (or batch)
=================================  ============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Per-slide Zarr stores: kind -> (folder under outdir, schema name), in pipeline order.
STORES: dict[str, tuple[str, str]] = {
    "tiles": ("tiles", "hwsi.tiles"),
    "cells": ("cells", "hwsi.cells"),
    "embeddings": ("embeddings", "hwsi.patch_embeddings"),
    "cell_embeddings": ("cell_embeddings", "hwsi.cell_embeddings"),
    "cache": ("cache", "hwsi.cache"),
}
KINDS = tuple(STORES)


@dataclass(frozen=True)
class OutputLayout:
    """Paths under one ``outdir`` (a string, as given in the config; no trailing slash)."""

    outdir: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "outdir", str(self.outdir).rstrip("/") or ".")

    def _p(self, *parts: str) -> str:
        return "/".join((self.outdir, *parts))

    # -- per-slide outputs ------------------------------------------------------------------
    def store(self, kind: str, slide: str) -> str:
        """The ``kind`` store of a slide (see :data:`STORES`)."""
        return self._p(STORES[kind][0], f"{slide}.zarr")

    def tissue(self, slide: str) -> str:
        return self._p("tissue", slide)

    def tiles(self, slide: str) -> str:
        return self.store("tiles", slide)

    def embeddings(self, slide: str) -> str:
        return self.store("embeddings", slide)

    def selection(self, slide: str) -> str:
        return self._p("selection", f"{slide}.csv")

    def selection_record(self, slide: str) -> str:
        """The selection's provenance record (:func:`hwsi_model.data.current.record_path`)."""
        return self._p("selection", f"{slide}.json")

    def cells(self, slide: str) -> str:
        return self.store("cells", slide)

    def cells_geojson(self, slide: str) -> str:
        return self._p("cells", f"{slide}.geojson")

    def cell_embeddings(self, slide: str) -> str:
        return self.store("cell_embeddings", slide)

    def cache(self, slide: str) -> str:
        return self.store("cache", slide)

    def qc(self, step: str, slide: str) -> str:
        return self._p("qc", step, f"{slide}.png")

    def job_outputs(self, job: str, slide: str) -> list[tuple[str, bool]]:
        """``(path, is a folder)`` of every output of a slide's ``prepare`` job (tissue, grid,
        tiling QC) or ``extract`` job (embeddings to cache), in the order the rules declare
        them; the batch rules and the batch jobs' failure placeholders take them from here."""
        if job == "prepare":
            return [(self.tissue(slide), True), (self.tiles(slide), True),
                    (self.qc("tiling", slide), False)]  # fmt: skip
        if job == "extract":
            return [
                (self.embeddings(slide), True),
                (self.selection(slide), False),
                (self.selection_record(slide), False),
                (self.cells(slide), True),
                (self.qc("cells", slide), False),
                (self.cells_geojson(slide), False),
                (self.cell_embeddings(slide), True),
                (self.cache(slide), True),
            ]
        raise ValueError(f"job must be 'prepare' or 'extract', not {job!r}")

    def log(self, step: str, slide: str | None = None) -> str:
        """``logs/{step}/{slide}.log``, or ``logs/{step}.log`` for a cohort-wide step."""
        return self._p("logs", step, f"{slide}.log") if slide else self._p("logs", f"{step}.log")

    def extract_batch(self, batch: str) -> str:
        """``batches/extract/{batch}.json``: what a batch job of the GPU chain ran per slide."""
        return self._p("batches", "extract", f"{batch}.json")

    def benchmark(self, step: str, slide: str) -> str:
        """``benchmarks/{step}/{slide}.tsv``: Snakemake's ``benchmark:`` record of one job."""
        return self._p("benchmarks", step, f"{slide}.tsv")

    # -- cohort outputs ---------------------------------------------------------------------
    @property
    def tiling_summary(self) -> str:
        return self._p("tiles", "summary.tsv")

    @property
    def selection_queries(self) -> str:
        """The prompt bank in the patch space (:mod:`hwsi_model.selection.text_queries`)."""
        return self._p("selection_queries.npy")

    @property
    def manifest(self) -> str:
        return self._p("manifest.csv")

    @property
    def failures(self) -> str:
        """``failures.tsv``: the excluded slides (written with the manifest)."""
        return self._p("failures.tsv")

    def model(self, name: str) -> str:
        """A model the workflow builds (``models/{name}``)."""
        return self._p("models", name)

    def training(self, *parts: str) -> str:
        """``training/...``: e.g. ``training("stage1", "model")``."""
        return self._p("training", *parts)

    def stage(self, stage: int | str, baseline: str | None = None) -> str:
        """A stage's folder: ``training/stageN`` or ``training/baselines/{b}/stageN``."""
        return self.training(training_run(stage, baseline))

    def stage_path(self, stage: int | str, name: str, baseline: str | None = None) -> str:
        """A file or folder of a stage's folder: ``model``, ``loss.csv``, ``loss.png``, ..."""
        return "/".join((self.stage(stage, baseline), name))

    @property
    def evaluation(self) -> str:
        return self._p("evaluation")


#: The training runs (``training/{run}/``): the method's stages and the baselines' (``flat``,
#: ``flat_cells``: stages 2-3, ``none``: stage 3), as a regular expression for the workflow's
#: ``{run}`` wildcard.
TRAINING_RUN = r"stage[123]|baselines/(?:flat|flat_cells)/stage[23]|baselines/none/stage3"


def training_run(stage: int | str, baseline: str | None = None) -> str:
    """``stageN`` for the method, ``baselines/{baseline}/stageN`` for a baseline."""
    return f"baselines/{baseline}/stage{stage}" if baseline else f"stage{stage}"


def parse_training_run(run: str) -> tuple[int, str | None]:
    """``(stage, baseline)`` of a training run (see :data:`TRAINING_RUN`); ValueError if not one."""
    if not re.fullmatch(TRAINING_RUN, run):
        raise ValueError(f"{run!r} is not a training run ({TRAINING_RUN})")
    parts = run.split("/")
    return int(parts[-1][len("stage") :]), (parts[1] if len(parts) == 3 else None)


def slide_of_store(path: str | Path) -> str:
    """The slide id of a per-slide store path (``.../{slide}.zarr``)."""
    name = Path(path).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def layout_of_store(path: str | Path) -> OutputLayout:
    """The layout a per-slide store lives in (``outdir/{kind}/{slide}.zarr``)."""
    return OutputLayout(str(Path(path).parent.parent))


def layout_of_batch_record(path: str | Path) -> OutputLayout:
    """The layout a batch record lives in (``outdir/batches/extract/{batch}.json``)."""
    return OutputLayout(str(Path(path).parent.parent.parent))
