"""One evaluation run: the method and its baselines on a test split, with everything a reader
needs to trust the numbers. Output folder::

    metrics.json              per family: metrics with 95 % intervals over slides, n,
                              unparsed, chance, baselines' values, paired comparisons; per
                              task group; fact scores of open answers (``facts``, when the
                              reports carry ground-truth facts); retrieval, zero-shot, evidence
                              overlap, provenance (model folders, caches), the run's settings
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
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from hwsi_model import provenance
from hwsi_model.atomic import atomic_output
from hwsi_model.data.manifest import read_manifest
from hwsi_model.data.text_records import read_reports
from hwsi_model.devices import resolve_device
from hwsi_model.evaluation.facts import fact_results, slide_truth
from hwsi_model.evaluation.families import EvalItem, by_family
from hwsi_model.evaluation.runner import EvalConfig, alignment_metrics, evaluate_models
from hwsi_model.evaluation.statistics import StatsSettings, bootstrap_interval, compare_models
from hwsi_model.evaluation.task_groups import check_task_groups, task_group

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

METHOD = "hierarchical"
MAJORITY = "majority"


def _evidence_pages(
    model_dir: Path,
    by_slide: Mapping[str, list[dict]],
    manifest_rows: dict[str, Any],
    out: Path,
    max_slides: int | None,
    annotations: Path | None,
    max_px: int,
    device: torch.device,
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

    model = load_model_folder(model_dir).to(device)
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
    slides and the test files' format; ``train_files``: the training instruction files, whose
    ``train_split`` items give the majority-answer baseline (:mod:`~hwsi_model.evaluation.
    majority`; none without them); ``task_groups``: group -> keywords replacing
    :data:`~hwsi_model.evaluation.task_groups.DEFAULT_TASK_GROUPS`.
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
    train_files: Sequence[str | Path] = ()
    train_split: str = "train"
    task_groups: Mapping[str, Sequence[str]] | None = None


@dataclass(frozen=True)
class ReportSettings:
    """The report's evidence pages: on the first ``evidence_slides`` test slides (0: all),
    thumbnails at most ``max_px`` pixels on a side."""

    evidence_slides: int = 0
    max_px: int = 768


def _alignment_tables(
    inputs: EvaluationInputs, device: torch.device
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Stage-1 retrieval and zero-shot figures, and their report tables."""
    from hwsi_model.model.checkpoint import load_model_folder

    if inputs.stage1_dir is None:
        return {}, {}
    align = alignment_metrics(
        load_model_folder(inputs.stage1_dir, load_llm=False).to(device),
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
    stats: StatsSettings | None = None,
) -> dict[str, Any]:
    """Evaluate the method and its baselines and write the run folder (module doc)
    atomically; returns the ``metrics.json`` document. Every metric gets a bootstrap interval
    over slides and the method a paired comparison with each baseline (``stats``)."""
    from hwsi_model.evaluation.report_html import metrics_document, write_metrics_json

    cfg, report = cfg or EvalConfig(), report or ReportSettings()
    models = {METHOD: Path(inputs.model_dir), **{k: Path(v) for k, v in inputs.baselines.items()}}
    split = inputs.split
    rows = {r.slide_id: r for r in read_manifest(inputs.manifest, splits=[split])}
    answerers = {}
    if inputs.train_files:
        from hwsi_model.evaluation.majority import majority_from_files

        majority = majority_from_files(
            inputs.train_files, inputs.manifest, inputs.train_split, inputs.fmt
        )
        answerers[MAJORITY] = majority.answer_all
    stats = stats or StatsSettings()
    with atomic_output(out_dir) as tmp:
        run = evaluate_models(
            models, inputs.manifest, inputs.test_files, tmp, split, inputs.fmt, cfg, answerers
        )
        if answerers:  # no majority figure for a family training had no item of
            for key in ("families", "tables"):
                run[key][MAJORITY] = {
                    f: v for f, v in run[key][MAJORITY].items() if f in majority.families
                }
        names = [*models, *answerers]
        results = [{"name": n, "families": run["families"][n]} for n in names]
        add_statistics(results, run["tables"], stats)
        extra: dict[str, Any] = {"split": split, "test_files": [str(f) for f in inputs.test_files]}
        extra["excluded_slides"] = failures_table_rows(inputs.failures)
        extra["left_out"] = run["left_out"]
        extra["statistics"] = stats.describe()
        device = resolve_device(cfg.device)
        align, tables = _alignment_tables(inputs, device)
        extra.update(align)
        tables.update(paired_table(results))
        truths = _fact_truths(inputs.reports, set(rows))
        if truths:
            facts = fact_results(run["items"], run["answers"], truths, METHOD, stats,
                                 {n: set(run["families"][n]) for n in names})  # fmt: skip
            extra["facts"] = facts
            tables.update(fact_tables(facts, names))
        groups = task_group_results(run["items"], run["tables"], inputs.task_groups, stats)
        extra["task_groups"] = groups
        tables.update(task_group_table(groups, names))
        records = [e.record(a) for e, a in zip(run["items"], run["answers"][METHOD], strict=True)]
        by_slide: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            by_slide[r["slide_id"]].append(r)
        item_pictures, overlap = _evidence_pages(
            models[METHOD], by_slide, rows, tmp, report.evidence_slides or None,
            Path(inputs.annotations) if inputs.annotations else None, report.max_px, device,
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


def _fact_truths(reports: str | Path | None, slides: set[str]) -> dict[str, dict[str, Any]]:
    """Ground-truth facts of the test slides whose report record carries them."""
    if reports is None:
        return {}
    out = {}
    for r in read_reports(reports):
        if r.slide_id in slides and r.facts:
            truth = slide_truth(r.facts, r.label)
            if truth:
                out[r.slide_id] = truth
    return out


_FACT_HEADLINE = ("fact_accuracy", "fact_recall", "contradiction_rate")


def fact_tables(facts: Mapping[str, dict], names: Sequence[str]) -> dict[str, dict]:
    """The report's tables of :func:`~hwsi_model.evaluation.facts.fact_results`: per family
    the headline metrics, each scale's and each fact's, value [interval] per model, and the
    paired differences of the headline metrics."""
    rows: dict[str, dict] = {}
    paired: dict[str, dict] = {}
    for fam, e in facts.items():
        for metric in e["models"][names[0]]["metrics"]:
            row: dict[str, Any] = {"n": e["n"]}
            for name in names:
                m = e["models"].get(name)
                v = m["metrics"].get(metric) if m else None
                row[name] = (
                    "-" if v is None else f"{v:.3f} {_interval_text(m['intervals'][metric])}"
                )
            rows[f"{fam} / {metric}"] = row
        for base, per in e["paired"].items():
            for metric in _FACT_HEADLINE:
                c = per.get(metric)
                if c is not None:
                    paired[f"{fam} / {metric} / {names[0]} - {base}"] = {
                        "difference": c["difference"],
                        "95% interval": _interval_text(c["interval"]),
                        "p (paired, slides)": c["p_value"],
                        "slides": c["n_slides"],
                    }
    out = {"Facts stated in open answers, checked against the slide's ground truth "
           "(hwsi_model/evaluation/facts.py; 95% intervals over slides)": rows}  # fmt: skip
    if paired:
        out[f"Fact scores, paired differences ({names[0]} minus each baseline)"] = paired
    return out


def add_statistics(
    results: Sequence[dict[str, Any]],
    tables: Mapping[str, Mapping[str, Any]],
    stats: StatsSettings | None = None,
) -> None:
    """Per family, ``intervals`` ({metric: [lo, hi] | None}) into every model's result and
    ``paired`` ({baseline: {metric: paired comparison}}) and ``n_slides`` into the first
    (the method's): :func:`~hwsi_model.evaluation.statistics.compare_models`."""
    method = results[0]["name"]
    for fam, r in results[0]["families"].items():
        fam_tables = {
            x["name"]: tables[x["name"]][fam] for x in results if fam in tables[x["name"]]
        }
        cmp = compare_models(fam_tables, method, stats)
        for x in results:
            if fam in x["families"]:
                x["families"][fam]["intervals"] = cmp["intervals"][x["name"]]
        r["paired"] = cmp["paired"]
        r["n_slides"] = cmp["n_slides"]


def _interval_text(iv: Sequence[float] | None) -> str:
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "-"


def paired_table(results: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
    """The report's table of paired differences (method minus each baseline)."""
    method = results[0]["name"]
    rows: dict[str, dict] = {}
    for fam, r in results[0]["families"].items():
        for base, per_metric in r.get("paired", {}).items():
            for metric, c in per_metric.items():
                rows[f"{fam} / {metric} / {method} - {base}"] = {
                    "difference": c["difference"],
                    "95% interval": _interval_text(c["interval"]),
                    "p (paired, slides)": c["p_value"],
                    "slides": c["n_slides"],
                }
    if not rows:
        return {}
    return {f"Paired differences, {method} minus each baseline (bootstrap and permutation "
            "test over slides)": rows}  # fmt: skip


def task_group_results(
    items: Sequence[EvalItem],
    tables: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]] | None = None,
    stats: StatsSettings | None = None,
) -> dict[str, dict]:
    """Metrics per task group (:mod:`hwsi_model.evaluation.task_groups`), family and model:
    ``{group: {family: {"n": items, "models": {model: {"metrics": {...}, "intervals":
    {...}}}}}}``; each family's table rows follow :func:`by_family` (as in
    :func:`~hwsi_model.evaluation.families.score_items_and_tables`)."""
    groups = check_task_groups(groups) if groups is not None else None
    out: dict[str, dict] = {}
    for fam, idx in by_family(items).items():
        of = [task_group(items[i].item.task, groups) for i in idx]
        for g in sorted(set(of)):
            rows = [j for j, x in enumerate(of) if x == g]
            entry = out.setdefault(g, {}).setdefault(fam, {"n": len(rows), "models": {}})
            for name, fam_tables in tables.items():
                if fam not in fam_tables:
                    continue
                t = fam_tables[fam].subset(rows)
                entry["models"][name] = {
                    "metrics": t.point(),
                    "intervals": {m: bootstrap_interval(t, m, stats) for m in t.metrics},
                }
    return dict(sorted(out.items()))


def task_group_table(groups: Mapping[str, dict], names: Sequence[str]) -> dict[str, dict]:
    """The report's table of :func:`task_group_results`: value [interval] per model."""
    rows: dict[str, dict] = {}
    for g, fams in groups.items():
        for fam, e in fams.items():
            for metric in e["models"][names[0]]["metrics"]:
                row: dict[str, Any] = {"n": e["n"]}
                for name in names:
                    m = e["models"].get(name)
                    if m is not None:
                        v = m["metrics"][metric]
                        row[name] = f"{v:.3f} {_interval_text(m['intervals'][metric])}"
                rows[f"{g} / {fam} / {metric}"] = row
    return {"Results by task group (WSI-Bench capabilities; 95% intervals over slides)": rows}


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


def _values_text(r: Mapping[str, Any]) -> str:
    iv = r.get("intervals") or {}
    return ", ".join(
        f"{k} {v:.3f}" + (f" {_interval_text(iv[k])}" if iv.get(k) else "")
        for k, v in r["metrics"].items()
        if isinstance(v, float)
    )


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """One line per family: n, slides, chance, every model's values with 95 % intervals; one
    per open family with fact scores (accuracy, recall, contradiction rate)."""
    lines = []
    for fam, r in doc["families"].items():
        base = "; ".join(f"{b}: {_values_text(br)}" for b, br in r.get("baselines", {}).items())
        chance = f", chance {r['chance']:.3f}" if r.get("chance") is not None else ""
        slides = f", {r['n_slides']} slides" if r.get("n_slides") else ""
        base = f" | {base}" if base else ""
        lines.append(
            f"{fam} (n={r['n']}{slides}, unparsed {r['unparsed']}{chance}): {_values_text(r)}{base}"
        )
    for fam, e in (doc.get("facts") or {}).items():
        per_model = []
        for name, m in e["models"].items():
            shown = {k: m["metrics"][k] for k in _FACT_HEADLINE if m["metrics"].get(k) is not None}
            per_model.append(f"{name}: " + _values_text({"metrics": shown, **m}))
        lines.append(
            f"facts in {fam} (n={e['n']}, {e['n_slides']} slides): " + "; ".join(per_model)
        )
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
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda")
    p.add_argument("--evidence-slides", type=int, default=0, help="0: every test slide")
    p.add_argument(
        "--annotations", help="annotation index CSV: measure the evidence against the regions"
    )
    p.add_argument("--curve", action="append", default=[], metavar="NAME=PNG")
    p.add_argument("--train", nargs="*", default=[], help="training instruction files: the "
                   "majority-answer baseline from their training-split items")  # fmt: skip
    p.add_argument("--train-split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    inputs = EvaluationInputs(
        a.model, a.manifest, a.test, baselines=dict(b.split("=", 1) for b in a.baseline),
        stage1_dir=a.stage1, reports=a.reports,
        class_prompts=json.loads(a.class_prompts) if a.class_prompts else None,
        annotations=a.annotations, curves=dict(c.split("=", 1) for c in a.curve),
        split=a.split, fmt=a.format, train_files=a.train, train_split=a.train_split,
    )  # fmt: skip
    cfg = EvalConfig(
        batch_size=a.batch_size, num_beams=a.beams, bertscore_model=a.bertscore_model,
        device=a.device,
    )  # fmt: skip
    doc = run_evaluation(inputs, a.out, cfg, ReportSettings(evidence_slides=a.evidence_slides))
    for line in summary_lines(doc):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
