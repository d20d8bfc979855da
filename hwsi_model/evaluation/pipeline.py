"""One evaluation run: the method and its baselines on a test split, with everything a reader
needs to trust the numbers. Output folder::

    metrics.json              per family: metrics, n, unparsed, chance, baselines' values;
                              retrieval, zero-shot, evidence overlap, provenance (model folders,
                              caches) and the run's settings
    report.html               the cohort report (tables, confusion matrices, examples, curves)
    predictions/<model>.jsonl one row per test item and model
    slides/<slide>.html       per slide: questions, answers, references, evidence pictures
    slides/img/*.png          evidence maps (region, patch, top patches with nuclei)

Command line (the workflow's ``evaluate`` rule)::

    python -m hwsi_model.evaluation.pipeline --model results/training/stage3/model \\
        --baseline flat=results/training/baselines/flat/stage3/model \\
        --baseline text_only=results/training/baselines/none/stage3/model \\
        --stage1 results/training/stage1/model --manifest results/manifest.csv \\
        --test cohort/vqa/test.json --reports cohort/reports.jsonl --out results/evaluation
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hwsi_model import provenance
from hwsi_model.atomic import atomic_output
from hwsi_model.data.manifest import read_manifest
from hwsi_model.evaluation.runner import EvalConfig, alignment_metrics, evaluate_models

log = logging.getLogger(__name__)

METHOD = "hierarchical"


def _evidence_pages(
    model_dir: Path,
    by_slide: Mapping[str, list[dict]],
    manifest_rows: dict[str, Any],
    out: Path,
    max_slides: int | None,
    annotations: Path | None,
    max_px: int,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per slide the evidence of the model's answer to the slide's report item (or first item),
    painted and measured against the annotated region (``annotations``: an index CSV of
    :mod:`hwsi_model.data.annotations`) of the slides that have one.
    Returns slide -> {item id -> pictures} and slide -> overlap."""
    import torch

    from hwsi_model.data.annotations import read_annotations
    from hwsi_model.data.stores.cache import read_cache, slide_tensors
    from hwsi_model.evaluation.ask import cells_store_of
    from hwsi_model.evaluation.heatmaps import hot_overlap, render_evidence
    from hwsi_model.model.checkpoint import load_model_folder
    from hwsi_model.model.evidence import evidence_scores

    model = load_model_folder(model_dir)
    if model.text_encoder is None:
        log.warning("%s has no text encoder: no evidence maps", model_dir)
        return {}, {}
    regions = read_annotations(annotations) if annotations is not None else {}
    item_pictures: dict[str, dict] = {}
    overlap: dict[str, dict] = {}
    for sid in tqdm(sorted(by_slide)[:max_slides], desc="evidence maps", leave=False):
        recs = by_slide[sid]
        rec = next((r for r in recs if r["family"] == "report"), recs[0])
        cache = Path(manifest_rows[sid].cache)
        arrays, attrs = read_cache(cache)
        slide_file = attrs.get("slide_path")
        if not slide_file or not Path(slide_file).exists():
            log.warning("%s: slide file %r not found; no evidence maps", sid, slide_file)
            continue
        text = f"{rec['question']} {rec['answer']}"
        with torch.no_grad():
            ev = evidence_scores(model, slide_tensors(arrays, attrs), text)
        paths = render_evidence(
            slide_file, arrays, attrs, ev, out / "slides" / "img", prefix=f"{sid}_",
            cells_store=cells_store_of(cache, sid), max_px=max_px,
        )  # fmt: skip
        item_pictures[sid] = {rec["id"]: paths}
        if sid in regions:
            frac = regions[sid].fraction_inside(
                arrays["patch_coords"], float(attrs["patch_size_level0"]), float(attrs["mpp"])
            )
            lesion = frac >= 0.5
            if lesion.any():
                overlap[sid] = {"item": rec["id"], **hot_overlap(ev.patch.float().numpy(), lesion)}
    return item_pictures, overlap


def _overlap_summary(per_slide: Mapping[str, dict]) -> dict[str, Any]:
    if not per_slide:
        return {}
    v = list(per_slide.values())
    aurocs = [o["auroc"] for o in v if o["auroc"] is not None]
    return {
        "slides": len(v),
        "top10_in_lesion_mean": float(np.mean([o["top_in_lesion"] for o in v])),
        "lesion_rate_mean": float(np.mean([o["lesion_rate"] for o in v])),
        "auroc_mean": float(np.mean(aurocs)) if aurocs else None,
        "per_slide": dict(per_slide),
    }


@dataclass(frozen=True)
class EvaluationInputs:
    """What an evaluation run reads.

    ``model_dir``: the method's stage-3 folder; ``baselines``: name -> stage-3 folder;
    ``stage1_dir``: the method's stage-1 folder (retrieval and zero-shot against ``reports`` and
    ``class_prompts``: label -> prompts); ``annotations``: an index CSV of region masks
    (:mod:`hwsi_model.data.annotations`) to measure the evidence maps against; ``curves``:
    name -> training-curve PNG for the report; ``split``/``fmt``: the manifest split of the test
    slides and the test files' format.
    """

    model_dir: str | Path
    manifest: str | Path
    test_files: Sequence[str | Path]
    baselines: Mapping[str, str | Path] = field(default_factory=dict)
    stage1_dir: str | Path | None = None
    reports: str | Path | None = None
    class_prompts: Mapping[str, Sequence[str] | str] | None = None
    annotations: str | Path | None = None
    curves: Mapping[str, str | Path] = field(default_factory=dict)
    split: str = "test"
    fmt: str = "auto"
    failures: str | Path | None = None  # failures.tsv: slides excluded before training


@dataclass(frozen=True)
class ReportSettings:
    """The report's evidence pages: on the first ``evidence_slides`` test slides (0: all),
    thumbnails at most ``max_px`` pixels on a side."""

    evidence_slides: int = 0
    max_px: int = 768


def _alignment_tables(inputs: EvaluationInputs) -> tuple[dict[str, Any], dict[str, dict]]:
    """Stage-1 retrieval and zero-shot figures, and their report tables."""
    from hwsi_model.model.checkpoint import load_model_folder

    if inputs.stage1_dir is None:
        return {}, {}
    align = alignment_metrics(
        load_model_folder(inputs.stage1_dir, load_llm=False),
        inputs.manifest, inputs.split, inputs.reports, inputs.class_prompts,
    )  # fmt: skip
    tables: dict[str, dict] = {}
    if "retrieval" in align:
        tables["Slide <-> report retrieval (stage 1)"] = {
            k: {m: v[m] for m in ("r1", "r5", "r10", "mrr", "n", "chance_r1")}
            for k, v in align["retrieval"].items()
        }
    if "zero_shot" in align:
        z = align["zero_shot"]
        tables["Zero-shot slide classification (stage 1)"] = {
            "stage 1": {k: z[k] for k in ("accuracy", "balanced_accuracy", "n", "chance")}
        }
    return align, tables


def _run_provenance(
    models: Mapping[str, Path], stage1_dir, rows: Mapping[str, Any], records: list[dict]
) -> dict[str, Any]:
    return {
        "code": provenance.code_version(),
        "models": {n: provenance.model_fingerprint(d) for n, d in models.items()},
        "stage1": provenance.model_fingerprint(stage1_dir) if stage1_dir else None,
        "caches": {
            sid: provenance.cache_fingerprint(rows[sid].cache)
            for sid in sorted({r["slide_id"] for r in records})
        },
    }


def run_evaluation(
    inputs: EvaluationInputs,
    out_dir: str | Path,
    cfg: EvalConfig | None = None,
    report: ReportSettings | None = None,
) -> dict[str, Any]:
    """Evaluate the method and its baselines and write the run folder (module doc)
    atomically; returns the ``metrics.json`` document."""
    from hwsi_model.evaluation.report_html import metrics_document, write_metrics_json

    cfg, report = cfg or EvalConfig(), report or ReportSettings()
    models = {METHOD: Path(inputs.model_dir), **{k: Path(v) for k, v in inputs.baselines.items()}}
    split = inputs.split
    rows = {r.slide_id: r for r in read_manifest(inputs.manifest, splits=[split])}
    with atomic_output(out_dir) as tmp:
        run = evaluate_models(
            models, inputs.manifest, inputs.test_files, tmp, split, inputs.fmt, cfg
        )
        results = [{"name": n, "families": run["families"][n]} for n in models]
        extra: dict[str, Any] = {"split": split, "test_files": [str(f) for f in inputs.test_files]}
        extra["excluded_slides"] = failures_table_rows(inputs.failures)
        extra["left_out"] = run["left_out"]
        align, tables = _alignment_tables(inputs)
        extra.update(align)
        records = [e.record(a) for e, a in zip(run["items"], run["answers"][METHOD], strict=True)]
        by_slide: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            by_slide[r["slide_id"]].append(r)
        item_pictures, overlap = _evidence_pages(
            models[METHOD], by_slide, rows, tmp, report.evidence_slides or None,
            Path(inputs.annotations) if inputs.annotations else None, report.max_px,
        )  # fmt: skip
        summary = _overlap_summary(overlap)
        if summary:
            extra["evidence_overlap"] = summary
            tables["Evidence vs the annotated region (hierarchical, report answers)"] = {
                sid: {k: o[k] for k in ("top_in_lesion", "lesion_rate", "auroc", "n_patches")}
                for sid, o in overlap.items()
            }
        extra["provenance"] = _run_provenance(models, inputs.stage1_dir, rows, records)
        extra["decoding"] = {"num_beams": cfg.num_beams, "seed": cfg.seed,
                             "max_new_tokens": cfg.max_new_tokens}  # fmt: skip
        write_metrics_json(tmp / "metrics.json", results, extra)
        _write_pages(tmp, results, records, by_slide, item_pictures, tables, inputs.curves, split,
                     extra)  # fmt: skip
    doc = metrics_document(results, extra)
    log.info("evaluation written to %s", out_dir)
    return doc


def _write_pages(
    tmp: Path,
    results: list[dict],
    records: list[dict],
    by_slide: Mapping[str, list[dict]],
    item_pictures: Mapping[str, dict],
    tables: dict[str, dict],
    curves: Mapping[str, str | Path],
    split: str,
    extra: Mapping[str, Any],
) -> None:
    """One page per slide and the cohort report (two examples per task family)."""
    from hwsi_model.evaluation.report_html import render_cohort_report, render_slide_page

    pages = {
        sid: render_slide_page(
            tmp / "slides" / f"{sid}.html",
            sid,
            recs,
            None,
            item_pictures.get(sid),
            tmp / "report.html",
        )
        for sid, recs in by_slide.items()
    }
    examples = []
    for fam in dict.fromkeys(r["family"] for r in records):
        examples += [{**r, "page": pages[r["slide_id"]]} for r in records if r["family"] == fam][:2]
    render_cohort_report(
        tmp / "report.html", results, title=f"Evaluation on the {split} split",
        tables=tables, examples=examples, curves=dict(curves), slide_pages=pages,
        metrics_json=tmp / "metrics.json", excluded=extra.get("excluded_slides") or (),
        left_out=extra.get("left_out"),
    )  # fmt: skip


def failures_table_rows(failures_tsv: str | Path | None) -> list[dict[str, str]]:
    """The cohort's excluded slides (``failures.tsv``): slide_id, job, step, reason."""
    from hwsi_model.data.failures import read_failures_table

    if failures_tsv is None:
        return []
    keys = ("slide_id", "job", "step", "reason")
    return [{k: r.get(k, "") for k in keys} for r in read_failures_table(failures_tsv)]


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    for fam, r in doc["families"].items():
        main = ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items() if isinstance(v, float))
        base = "; ".join(
            f"{b}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in br["metrics"].items() if isinstance(v, float)
            )
            for b, br in r.get("baselines", {}).items()
        )  # fmt: skip
        chance = f", chance {r['chance']:.3f}" if r.get("chance") is not None else ""
        base = f" | {base}" if base else ""
        lines.append(f"{fam} (n={r['n']}, unparsed {r['unparsed']}{chance}): {main}{base}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from hwsi_model.logs import setup_logging

    p = argparse.ArgumentParser(description="evaluate a model and its baselines on a test split")
    p.add_argument("--model", required=True, help="the method's model folder (stage 3)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--stage1", help="stage-1 model folder (retrieval, zero-shot)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--test", nargs="+", required=True, help="test files (any supported format)")
    p.add_argument("--format", default="auto")
    p.add_argument("--reports")
    p.add_argument("--split", default="test")
    p.add_argument("--class-prompts", help="JSON {label: [prompts]} for zero-shot")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bertscore-model", help="local model folder for BERTScore")
    p.add_argument("--evidence-slides", type=int, default=0, help="0: every test slide")
    p.add_argument(
        "--annotations", help="annotation index CSV: measure the evidence against the regions"
    )
    p.add_argument("--curve", action="append", default=[], metavar="NAME=PNG")
    p.add_argument("--out", required=True)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    inputs = EvaluationInputs(
        a.model, a.manifest, a.test, baselines=dict(b.split("=", 1) for b in a.baseline),
        stage1_dir=a.stage1, reports=a.reports,
        class_prompts=json.loads(a.class_prompts) if a.class_prompts else None,
        annotations=a.annotations, curves=dict(c.split("=", 1) for c in a.curve),
        split=a.split, fmt=a.format,
    )  # fmt: skip
    cfg = EvalConfig(batch_size=a.batch_size, num_beams=a.beams, bertscore_model=a.bertscore_model)
    doc = run_evaluation(inputs, a.out, cfg, ReportSettings(evidence_slides=a.evidence_slides))
    for line in summary_lines(doc):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
