"""Questions about one slide: ``hwsi ask`` and ``hwsi report``.

The slide is given as its multi-scale cache (``results/cache/<slide>.zarr``) or as a slide
file. A slide file is run through the workflow's own per-slide steps first
(:func:`prepare_cache`): Snakemake builds that slide's cache in the results folder the model
was trained from, with the same config, so the features match the training ones (same
encoder, mpp, patch size, selection and nucleus model).

The answer comes with its evidence (:mod:`hwsi_model.model.evidence`): the relevance of the
question and answer to every region, patch and cell, painted by
:func:`hwsi_model.evaluation.heatmaps.render_evidence`.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hwsi_model.data.layout import OutputLayout, layout_of_store
from hwsi_model.errors import HwsiError

log = logging.getLogger(__name__)

#: The prompt of ``hwsi report`` (the first stage-2 caption prompt).
REPORT_PROMPT = "Write a concise pathology report for this slide."
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Answer:
    """An answer and where its evidence pictures went."""

    slide_id: str
    question: str
    answer: str
    cache: Path
    pictures: dict[str, Path] = field(default_factory=dict)
    top_patches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slide_id": self.slide_id,
            "question": self.question,
            "answer": self.answer,
            "cache": str(self.cache),
            "pictures": {k: str(v) for k, v in self.pictures.items()},
            "top_patches": self.top_patches,
        }


def workflow_dir() -> Path:
    """The folder holding the ``Snakefile`` (the repository root of an editable install)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Snakefile").exists():
        raise HwsiError(f"no Snakefile next to the hwsi_model package ({root}); pass --workflow")
    return root


def prepare_cache(
    slide: str | Path,
    results: str | Path,
    configfile: str | Path,
    slide_id: str | None = None,
    mpp: float | None = None,
    cores: int = 2,
    workflow: str | Path | None = None,
) -> Path:
    """Build (or reuse) the cache of a slide file with the workflow; returns its path.

    Runs ``snakemake <results>/cache/<slide_id>.zarr`` with ``configfile`` and a one-row sample
    sheet, in ``results`` (``outdir``): the cohort's models (encoder, nucleus model) are
    reused as they are (``--rerun-triggers mtime``: only missing outputs are built). An existing
    cache of another slide under the same id is an error.
    """
    slide = Path(slide).resolve()
    if not slide.exists():
        raise HwsiError(f"slide {slide} does not exist")
    sid = slide_id or _SAFE_ID.sub("_", slide.stem).strip("._-") or "slide"
    results = Path(results)
    cache = Path(OutputLayout(str(results)).cache(sid))
    if cache.exists():
        from hwsi_model.data.stores.cache import read_cache

        _, attrs = read_cache(cache)
        recorded = attrs.get("slide_path")
        if recorded and Path(recorded).resolve() != slide:
            raise HwsiError(
                f"{cache} belongs to {recorded}, not {slide}; choose another --slide-id"
            )
        log.info("reusing the cache %s", cache)
        return cache
    wf = Path(workflow) if workflow else workflow_dir()
    cfg = yaml.safe_load(Path(configfile).read_text()) or {}
    # The cohort's own sheet still names the slides a demo nucleus model was trained on.
    train_sheet = ((cfg.get("cells") or {}).get("training") or {}).get("samples") or cfg.get(
        "samples"
    )
    extra = [f"cells={json.dumps({'training': {'samples': train_sheet}})}"] if train_sheet else []
    with tempfile.TemporaryDirectory(prefix="hwsi_ask_") as tmp:
        sheet = Path(tmp) / "samples.csv"
        with open(sheet, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["slide_id", "path", "mpp"])
            w.writerow([sid, str(slide), "" if mpp is None else mpp])
        cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(wf / "Snakefile"),
            "--directory", str(Path.cwd()), "--cores", str(cores),
            "--configfile", str(Path(configfile).resolve()),
            "--config", f"samples={sheet}", f"outdir={results}",
            *extra,
            # Only what is missing: the cohort's models stay as the trained model saw them.
            "--rerun-triggers", "mtime", "--quiet", "rules", "--", str(cache),
        ]  # fmt: skip
        log.info("building the cache of %s with the workflow (%s)", slide.name, configfile)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not cache.exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise HwsiError(f"could not build the cache of {slide}:\n{tail}")
    return cache


def cells_store_of(cache: Path, slide_id: str) -> Path | None:
    """The slide's cell store in the cache's output folder (``results/cells/<slide>.zarr``)."""
    store = Path(layout_of_store(cache).cells(slide_id))
    return store if store.exists() else None


@torch.no_grad()
def ask(
    model,
    cache: str | Path,
    question: str,
    evidence_dir: str | Path | None = None,
    num_beams: int = 1,
    max_new_tokens: int = 192,
    slide_path: str | Path | None = None,
    top_k: int = 6,
) -> Answer:
    """Answer ``question`` about the slide of ``cache`` with ``model`` (an ``HWSIModel``).

    With ``evidence_dir``, writes the region, patch and top-patch pictures of the evidence of
    ``question + answer`` (the slide file is the one the cache records, or ``slide_path``).
    """
    from hwsi_model.data.stores.cache import read_cache, slide_tensors
    from hwsi_model.model.batch import collate_slides

    cache = Path(cache)
    arrays, attrs = read_cache(cache)
    slide = slide_tensors(arrays, attrs)
    sid = str(attrs.get("slide_id") or cache.stem.removesuffix(".zarr"))
    model.eval()
    torch.manual_seed(0)
    text = model.generate(
        collate_slides([slide]), [question], max_new_tokens=max_new_tokens, num_beams=num_beams
    )[0].strip()
    result = Answer(slide_id=sid, question=question, answer=text, cache=cache)
    if evidence_dir is not None:
        from hwsi_model.evaluation.heatmaps import render_evidence
        from hwsi_model.model.evidence import evidence_scores

        if model.text_encoder is None:
            raise HwsiError("evidence maps need the model's text encoder (stage 1 onwards)")
        ev = evidence_scores(model, slide, f"{question} {text}")
        src = slide_path or attrs.get("slide_path")
        if not src or not Path(src).exists():
            raise HwsiError(f"the slide file of {cache} is not at {src!r}; pass --slide-file")
        prefix = _SAFE_ID.sub("_", sid) + "_"
        result.pictures = render_evidence(
            src, arrays, attrs, ev, evidence_dir, prefix=prefix, top_k=top_k,
            cells_store=cells_store_of(cache, sid),
        )  # fmt: skip
        result.top_patches = np.argsort(-ev.patch.float().numpy(), kind="stable")[:top_k].tolist()
    return result
