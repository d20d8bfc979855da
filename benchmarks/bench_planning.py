"""Snakemake planning time for large cohorts and the no-op re-run of a processed cohort (issue 8).

1. DAG planning: a sample sheet of N slides whose files are empty placeholders (a dry run only
   checks that an input exists and reads its modification time; no slide is opened), then
   ``snakemake -n`` on every per-slide output and the cohort manifest (2 jobs per slide:
   ``prepare_slide`` and ``extract_slide``; with ``embed.slides_per_job: N`` > 1, as in the
   demo config, 2 jobs per batch of N slides, ``prepare_batch_*`` and ``extract_batch_*``; 7 jobs
   per slide before issue 13), for N = 1,000, 10,000 and 100,000. Wall time of the whole command
   (Python start, parsing, DAG, job list). ``--slides-per-job K`` overrides the config's N.
2. No-op re-run of a processed 100-slide cohort. Processing 100 slides here would take about an
   hour, so the cohort is made from the finished demo run (``demo/results``, 24 slides,
   ``make demo``; read only): the per-slide outputs of demo slide ``i % 24`` are copied under the
   new id ``bench_i`` (real outputs, not placeholders) with their modification times, the slides
   are symbolic links to the demo slide files with the files' times, and the sample sheet has
   the demo sheet's time, so every output is newer than its inputs as after a real run.
   Snakemake then finds nothing to redo by modification time but has no records for the copies,
   so its other re-run triggers (parameters, input set, code, software environment) are
   inactive; ``snakemake --touch --forceall`` touches every output in run order and records
   them as a finished run does. After that,
   ``snakemake -n`` on the same targets must report "Nothing to be done"; its wall time is the
   median of ``--repeats`` runs. Targets: every per-slide output (tissue mask to cache and the
   QC pictures). The cohort manifest is left out: it reads the slide ids stored inside the
   caches, which the copies keep from their demo slide.

Usage: python benchmarks/bench_planning.py [--sizes 1000 10000 100000] [--noop-slides 100]
       [--repeats 3] [--plan-repeats 1] [--demo demo] [--out benchmarks/out/planning.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# Per-slide outputs (relative to outdir) of the chain tissue -> ... -> cache, in run order.
PER_SLIDE = [
    "tissue/{s}",
    "tiles/{s}.zarr",
    "qc/tiling/{s}.png",
    "embeddings/{s}.zarr",
    "selection/{s}.csv",
    "selection/{s}.json",
    "cells/{s}.zarr",
    "cells/{s}.geojson",
    "qc/cells/{s}.png",
    "cell_embeddings/{s}.zarr",
    "cache/{s}.zarr",
]
# Targets that pull in every per-slide job: the caches and the QC pictures.
TARGETS = ["cache/{s}.zarr", "qc/cells/{s}.png", "qc/tiling/{s}.png"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e["HF_HUB_OFFLINE"] = "1"
    return e


def snakemake(workdir: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run Snakemake on the workflow in ``workdir``; (wall time in s, the finished process)."""
    cmd = [str(SNAKEMAKE), *args, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=3600)
    return time.perf_counter() - t0, proc


def planned_total(output: str) -> int:
    """Jobs in a dry run's "Job stats" table (0 when there is nothing to do)."""
    m = re.search(r"^total\s+(\d+)\s*$", output, re.M)
    if m:
        return int(m.group(1))
    if "Nothing to be done" in output:
        return 0
    raise RuntimeError("no job count in Snakemake's output:\n" + output[-3000:])


def write_config(workdir: Path, samples: Path, gt_index: Path, base: dict) -> None:
    """config.yaml of the workdir: the demo's parameters, this cohort's sheet and outdir."""
    config = json.loads(json.dumps(base))
    config["samples"] = str(samples)
    config["outdir"] = "out"
    config["cells"]["training"]["gt_index"] = str(gt_index)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def plan(n: int, root: Path, base: dict, repeats: int = 1) -> dict:
    """Dry run of the per-slide chain and the manifest for ``n`` placeholder slides; its wall
    time is the median of ``repeats`` runs (all of them recorded)."""
    work = root / f"plan_{n}"
    slides = work / "slides"
    slides.mkdir(parents=True)
    rows = []
    for i in range(n):
        path = slides / f"s{i:05d}.tiff"
        path.touch()
        rows.append({"slide_id": f"s{i:05d}", "path": str(path), "split": "train"})
    samples = work / "samples.csv"
    with samples.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "path", "split"])
        w.writeheader()
        w.writerows(rows)
    gt_index = work / "gt_index.csv"
    gt_index.touch()
    write_config(work, samples, gt_index, base)
    runs = []
    for _ in range(repeats):
        seconds, proc = snakemake(work, "-n", "out/manifest.csv", "out/tiles/summary.tsv")
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        runs.append(round(seconds, 2))
    jobs = planned_total(proc.stdout + proc.stderr)
    return {"slides": n, "jobs": jobs, "seconds": statistics.median(runs), "runs": runs}


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a file or folder with its modification times (``copy2``; folders' own times too)."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=shutil.copy2, symlinks=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def processed_cohort(n: int, demo: Path, root: Path, base: dict) -> tuple[Path, list[str]]:
    """A workdir whose ``out/`` holds ``n`` finished slides copied from the demo run."""
    results, cohort = demo / "results", demo / "cohort"
    with (cohort / "samples.csv").open() as f:
        demo_rows = list(csv.DictReader(f))
    if not all((results / "cache" / f"{r['slide_id']}.zarr").is_dir() for r in demo_rows):
        raise SystemExit(f"{results} is not a finished demo run: run `make demo` first")
    work = root / f"noop_{n}"
    out = work / "out"
    (work / "slides").mkdir(parents=True)
    rows, targets = [], []
    for i in range(n):
        src = demo_rows[i % len(demo_rows)]
        sid = f"bench_{i:03d}"
        slide = work / "slides" / f"{sid}.tiff"
        target = (cohort / src["path"]).resolve()
        slide.symlink_to(target)
        st = target.stat()  # Snakemake reads a link's own time: give it the file's
        os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        rows.append({**src, "slide_id": sid, "path": str(slide)})
        for pattern in PER_SLIDE:
            copy_tree(results / pattern.format(s=src["slide_id"]), out / pattern.format(s=sid))
        targets += [f"out/{t.format(s=sid)}" for t in TARGETS]
    for model in ("tiny_vit", "stardist_demo"):
        copy_tree(results / "models" / model, out / "models" / model)
    samples = work / "samples.csv"
    with samples.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    shutil.copystat(cohort / "samples.csv", samples)  # the sheet predates the run
    write_config(work, samples, (cohort / "nuclei_gt" / "index.csv").resolve(), base)
    return work, targets


def noop(n: int, demo: Path, root: Path, base: dict, repeats: int) -> dict:
    work, targets = processed_cohort(n, demo, root, base)
    # Before --touch: the copies are up to date by time, but Snakemake has no records of them.
    before_s, before = snakemake(work, "-n", *targets)
    if before.returncode != 0:
        raise RuntimeError(before.stderr[-3000:])
    text = before.stdout + before.stderr
    jobs_before = planned_total(text)
    m = re.search(r"(\d+) jobs have missing provenance/metadata", text)
    missing_before = int(m.group(1)) if m else 0
    reasons_before = Counter(
        r.split(":")[0] for r in re.findall(r"^\s+reason: ([^;\n]+)", text, re.M)
    )
    touch_s, proc = snakemake(work, "--touch", "--forceall", "--cores", "1", *targets)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    times, outputs = [], []
    for _ in range(repeats):
        seconds, proc = snakemake(work, "-n", *targets)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        times.append(seconds)
        outputs.append(proc.stdout + proc.stderr)
    jobs = [planned_total(o) for o in outputs]
    m = re.search(r"(\d+) jobs have missing provenance/metadata", outputs[0])
    missing_after = int(m.group(1)) if m else 0
    if any(jobs):
        raise RuntimeError(f"the re-run is not a no-op: {jobs} jobs planned\n{outputs[0][-3000:]}")
    records = sum(1 for p in (work / ".snakemake" / "metadata").rglob("*") if p.is_file())
    return {
        "slides": n,
        "targets": len(targets),
        "jobs_planned": 0,
        "message": "Nothing to be done" if "Nothing to be done" in outputs[0] else outputs[0],
        "seconds_median": round(statistics.median(times), 2),
        "seconds": [round(t, 2) for t in times],
        "jobs_before_touch": jobs_before,
        "seconds_before_touch": round(before_s, 2),
        "jobs_without_metadata_before_touch": missing_before,
        "reasons_before_touch": dict(reasons_before),
        "touch_seconds": round(touch_s, 1),
        "metadata_records": records,
        "jobs_without_metadata": missing_after,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--noop-slides", type=int, default=100, help="0: skip the no-op run")
    ap.add_argument("--repeats", type=int, default=3, help="no-op runs (median)")
    ap.add_argument("--plan-repeats", type=int, default=1, help="dry runs per size (median)")
    ap.add_argument("--demo", type=Path, default=REPO / "demo", help="a finished `make demo`")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "planning.json")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--slides-per-job", type=int, default=None, help="embed.slides_per_job")
    args = ap.parse_args()
    base = yaml.safe_load(args.config.read_text())
    if args.slides_per_job:
        base["embed"]["slides_per_job"] = args.slides_per_job
    root = Path(tempfile.mkdtemp(prefix="hwsi_bench_planning_"))
    result: dict = {
        "snakemake": subprocess.check_output([str(SNAKEMAKE), "--version"], text=True).strip(),
        "slides_per_job": base["embed"].get("slides_per_job", 1),
    }
    try:
        result["planning"] = [plan(n, root, base, args.plan_repeats) for n in args.sizes]
        if args.noop_slides:
            result["noop"] = noop(args.noop_slides, args.demo, root, base, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| slides | jobs planned | snakemake -n (s), median | runs (s) |")
    print("| --- | --- | --- | --- |")
    for row in result.get("planning", []):
        runs = ", ".join(f"{s:.1f}" for s in row["runs"])
        print(f"| {row['slides']:,} | {row['jobs']:,} | {row['seconds']:.1f} | {runs} |")
    if "noop" in result:
        r = result["noop"]
        print(
            f"no-op re-run, {r['slides']} processed slides: {r['jobs_planned']} jobs planned "
            f"({r['message']}), {r['seconds_median']:.2f} s (median of {r['seconds']}); "
            f"before --touch: {r['jobs_before_touch']} jobs planned, "
            f"{r['jobs_without_metadata_before_touch']} jobs without metadata, "
            f"{r['seconds_before_touch']:.2f} s, reasons {r['reasons_before_touch']}"
        )


if __name__ == "__main__":
    main()
