"""Per-slide fixed cost of the extraction chain: what a slide's jobs spend outside their own work.

The demo cohort (24 slides, ``hwsi-demo cohort``) runs through the workflow up to the cohort
manifest (tissue -> tiles -> patch embeddings -> selection -> nuclei -> cell embeddings ->
cache) with ``--cores`` cores. Two records of every per-slide job are read:

- Snakemake's ``benchmark:`` file (``outdir/benchmarks/{rule}/{slide}.tsv``): the job's wall
  time ``s``, interpreter start-up and Snakemake's script preamble included;
- the job's log: ``timing work_s=W process_s=P`` (the step's own time and the process's age at
  its end, :func:`hwsi_model.logs.log_timing`) and, for jobs that run several steps,
  ``timing step=NAME work_s=W`` per step and ``timing setup=NAME s=S`` per model loaded.

With ``embed.slides_per_job > 1`` a batch of slides runs in two jobs, ``prepare_batch_*`` and
``extract_batch_*`` (records under ``benchmarks/prepare_batch/`` and ``benchmarks/extract_batch/``):
a batch job's wall time is shared equally by its slides, and its per-step lines are assigned to
the slide whose ``ran ...; kept ...`` line follows them.

Work is the steps' own compute (reading the slide, encoding, segmenting, writing stores);
model loading, imports and start-up are fixed cost. Per slide: fixed = sum of job walls -
sum of work. A job that logs no per-step work (the one-step-per-job layout, where a step's
time includes its lazy imports and model loading) is given the per-step work of
``--work-from`` (a JSON of this script for the same cohort), so that both layouts are compared
on the same definition of work.

Usage: python benchmarks/bench_fixed_cost.py [--work DIR] [--cores 2] [--label after]
       [--work-from benchmarks/fixed_cost/after.json] [--out benchmarks/fixed_cost/LABEL.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMING = re.compile(r"timing (?:(step|setup)=(\S+) )?(?:work_s|s)=([\d.]+)(?: process_s=([\d.]+))?")
COHORT_RULES = {"train_demo_stardist", "build_demo_encoder", "manifest", "tiling_summary"}
BATCH_RULES = ("prepare_batch", "extract_batch")


def make_config(work: Path, cohort: Path, out: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(samples=str(cohort / "samples.csv"), outdir=str(out))
    cfg["cells"]["training"]["gt_index"] = str(cohort / "nuclei_gt" / "index.csv")
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


FINISHED = re.compile(r"slide '([^']+)': ran .*; kept ")


def read_timings(log: Path) -> dict:
    """``{"work_s", "process_s", "steps": {name: s}, "setup": {name: s}, "per_slide":
    {slide: {name: s}}}`` of one job's log (``per_slide``: the steps before each slide's
    ``ran ...; kept ...`` line)."""
    rec: dict = {"work_s": None, "process_s": None, "steps": {}, "setup": {}, "per_slide": {}}
    pending: dict[str, float] = {}
    for line in log.read_text().splitlines():
        if m := FINISHED.search(line):
            rec["per_slide"][m.group(1)], pending = pending, {}
            continue
        m = TIMING.search(line)
        if not m:
            continue
        kind, name, value, process = m.groups()
        if kind == "step":
            rec["steps"][name] = float(value)
            pending[name] = float(value)
        elif kind == "setup":
            rec["setup"][name] = float(value)
        else:
            rec["work_s"], rec["process_s"] = float(value), float(process)
    return rec


def collect(out: Path) -> dict[str, dict[str, dict]]:
    """rule -> slide -> {"wall_s", "max_rss_mb", timings of its log}."""
    jobs: dict[str, dict[str, dict]] = defaultdict(dict)
    for tsv in sorted((out / "benchmarks").glob("*/*.tsv")):
        rule, slide = tsv.parent.name, tsv.stem
        with open(tsv, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rec = {"wall_s": float(row["s"]), "max_rss_mb": float(row["max_rss"])}
        log = out / "logs" / rule / f"{slide}.log"
        rec.update(read_timings(log) if log.is_file() else {})
        jobs[rule][slide] = rec
    return dict(jobs)


def step_work(jobs: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """step -> slide -> work s, from the per-step lines (or a one-step job's own line)."""
    work: dict[str, dict[str, float]] = defaultdict(dict)
    for per_slide in jobs.values():
        for rec in per_slide.values():
            for slide, steps in rec.get("per_slide", {}).items():
                for step, s in steps.items():
                    work[step][slide] = s
    return dict(work)


def members(out: Path, jobs: dict) -> dict[str, list[str]]:
    """batch -> its slides (from the extract batch records; a prepare batch has the same
    name and slides)."""
    folder = out / "batches" / "extract"
    return {
        b: list(json.loads((folder / f"{b}.json").read_text())["slides"])
        for b in jobs.get("extract_batch", {})
    }


def summarise(
    jobs: dict, work_ref: dict[str, dict[str, float]] | None, batches: dict[str, list[str]]
) -> dict:
    own = step_work(jobs)
    work = own or (work_ref or {})
    slides = sorted(
        {s for r, per in jobs.items() if r not in BATCH_RULES for s in per}
        | {s for ids in batches.values() for s in ids}
    )
    rules = {}
    for rule, per_slide in sorted(jobs.items()):
        walls = [r["wall_s"] for r in per_slide.values()]
        rules[rule] = {
            "jobs": len(walls),
            "wall_s_mean": statistics.mean(walls),
            "in_step_s_mean": statistics.mean(
                r["work_s"] for r in per_slide.values() if r.get("work_s") is not None
            )
            if any(r.get("work_s") is not None for r in per_slide.values())
            else None,
            "setup_s_mean": {
                k: statistics.mean(r["setup"].get(k, 0.0) for r in per_slide.values())
                for k in sorted({k for r in per_slide.values() for k in r.get("setup", {})})
            },
        }
    shared: dict[str, float] = defaultdict(float)  # a batch job's wall, shared by its slides
    for rule in BATCH_RULES:
        for b, rec in jobs.get(rule, {}).items():
            for s in batches[b]:
                shared[s] += rec["wall_s"] / len(batches[b])
    per_slide_wall = [
        sum(jobs[r][s]["wall_s"] for r in jobs if s in jobs[r] and r not in BATCH_RULES)
        + shared.get(s, 0.0)
        for s in slides
    ]
    per_slide_work = [sum(work[step].get(s, 0.0) for step in work) for s in slides]
    fixed = [w - k for w, k in zip(per_slide_wall, per_slide_work, strict=True)]
    return {
        "slides": len(slides),
        "jobs_per_slide": statistics.mean(
            sum(1 for r in jobs if r not in BATCH_RULES and s in jobs[r]) for s in slides
        )
        + sum(len(jobs.get(r, {})) for r in BATCH_RULES) / max(len(slides), 1),
        "rules": rules,
        "work_s_mean_per_step": {
            step: statistics.mean(v.values()) for step, v in sorted(work.items())
        },
        "work_source": "own" if own else "work-from",
        "per_slide": {
            "wall_s_mean": statistics.mean(per_slide_wall),
            "work_s_mean": statistics.mean(per_slide_work),
            "fixed_s_mean": statistics.mean(fixed),
            "fixed_s_max": max(fixed),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--label", default="after")
    ap.add_argument("--work-from", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hwsi_fixed_"))
    work.mkdir(parents=True, exist_ok=True)
    cohort, out = work / "cohort", work / "results"
    if not (cohort / "samples.csv").is_file():
        subprocess.run([str(BIN / "hwsi-demo"), "cohort", str(cohort)], check=True)
    cfg = make_config(work, cohort, out)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "--cores",
            str(args.cores),
            "--configfile",
            str(cfg),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            str(out / "manifest.csv"),
        ],
        capture_output=True,
        text=True,
    )
    total = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    jobs = collect(out)
    ref = None
    if args.work_from:
        ref = {k: v for k, v in json.loads(args.work_from.read_text())["work_s_per_slide"].items()}
    result = {
        "label": args.label,
        "cores": args.cores,
        "snakemake_wall_s": total,
        **summarise(jobs, ref, members(out, jobs)),
        "work_s_per_slide": step_work(jobs),
        "jobs": jobs,
    }
    dest = args.out or REPO / "benchmarks" / "fixed_cost" / f"{args.label}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=1) + "\n")
    brief = {k: result[k] for k in ("label", "snakemake_wall_s", "jobs_per_slide", "per_slide")}
    print(json.dumps(brief, indent=1))
    for rule, r in result["rules"].items():
        print(
            f"{rule:22s} jobs {r['jobs']:3d} wall {r['wall_s_mean']:6.2f} s  in-step "
            f"{r['in_step_s_mean'] or 0:6.2f} s  setup {r['setup_s_mean']}"
        )


if __name__ == "__main__":
    main()
