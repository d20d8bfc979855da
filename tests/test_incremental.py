"""Incremental cohorts: cohort B appended to cohort A's sample sheet runs only B's per-slide jobs
and the aggregates (Snakemake's own dry-run job list), leaves A's outputs byte- and
mtime-identical, and a changed encoder or selection parameter re-runs only what depends on it
(grid parameters: test_workflow.py).

The chain is tissue -> tiles -> patch embeddings (the demo's tiny ViT) -> selection, with the
tiling summary as the aggregate: the cheapest real configuration (no StarDist); the whole chain
up to the manifest with a new slide is planned in test_workflow.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_robustness import snapshot
from test_workflow import SUMMARY, planned_jobs, snakemake, write_cohort

pytestmark = pytest.mark.workflow

EMBED = (
    "embed:\n  encoder: tiny-vit\n  checkpoint: {checkpoint}\n  num_workers: 0\n"
    "  precision: {precision}\n  selection:\n"
)
SELECTION = "    n_candidates: 4\n    top_k: {top_k}\n"
PER_SLIDE = ("tissue", "tiles", "embed_patches", "select_patches")


def config(checkpoint: str = "demo", top_k: int = 2, precision: str = "auto") -> str:
    return EMBED.format(checkpoint=checkpoint, precision=precision) + SELECTION.format(top_k=top_k)


def targets(slides: list[str]) -> list[str]:
    return [SUMMARY, *(f"out/selection/{s}.csv" for s in slides)]


def outputs_of(out: Path, slides: list[str]) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file of these slides' outputs."""
    snap = {}
    for sid in slides:
        for folder, name in (
            ("tissue", sid),
            ("tiles", f"{sid}.zarr"),
            ("embeddings", f"{sid}.zarr"),
        ):
            snap.update(
                {f"{folder}/{name}/{k}": v for k, v in snapshot(out / folder / name).items()}
            )
        sel = out / "selection" / f"{sid}.csv"
        snap[f"selection/{sid}.csv"] = (sel.stat().st_mtime_ns, sel.read_bytes())
    return snap


def test_new_cohort_runs_only_its_slides_and_changed_parameters_only_their_steps(
    tmp_path, make_slide, venv_path_env
):
    work, out = tmp_path / "wf", tmp_path / "wf" / "out"
    a = [make_slide(f"a{i}", 1024, 1024, mpp=0.5, seed=i) for i in range(2)]
    b = [make_slide("b0", 1024, 1024, mpp=0.5, seed=10)]
    rows_a = [f"{p.stem},{p}," for p in a]
    rows_b = [f"{p.stem},{p}," for p in b]
    ids_a, ids_b = [p.stem for p in a], [p.stem for p in b]

    write_cohort(work, rows_a, extra_yaml=config())
    proc = snakemake(work, venv_path_env, *targets(ids_a), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = outputs_of(out, ids_a)

    # Cohort B appended: only B's per-slide jobs and the aggregate are planned.
    write_cohort(work, rows_a + rows_b, extra_yaml=config())
    proc = snakemake(work, venv_path_env, *targets(ids_a + ids_b), "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    assert {(r, s) for r, s in jobs if s} == {(r, s) for r in PER_SLIDE for s in ids_b}
    assert [r for r, s in jobs if s is None] == ["tiling_summary"]
    proc = snakemake(work, venv_path_env, *targets(ids_a + ids_b), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs_of(out, ids_a) == before  # A's outputs untouched (bytes and mtimes)
    summary = (out / "tiles" / "summary.tsv").read_text()
    assert all(sid in summary for sid in ids_a + ids_b)
    proc = snakemake(work, venv_path_env, *targets(ids_a + ids_b), "-n")
    assert planned_jobs(proc.stdout) == [], proc.stdout  # a no-op re-run plans nothing

    everyone = ids_a + ids_b
    # Another encoder: the embeddings and what reads them, not tissue, tiles or the summary.
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    other = build_tiny_encoder(tmp_path / "other_vit", seed=1)
    write_cohort(work, rows_a + rows_b, extra_yaml=config(checkpoint=str(other)))
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert set(jobs) == {(r, s) for r in ("embed_patches", "select_patches") for s in everyone}
    # Another selection size: only the selection.
    write_cohort(work, rows_a + rows_b, extra_yaml=config(top_k=3))
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert set(jobs) == {("select_patches", s) for s in everyone}
    # Another embedding precision changes the embeddings: they and what reads them re-run.
    write_cohort(work, rows_a + rows_b, extra_yaml=config(precision="bf16"))
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert set(jobs) == {(r, s) for r in ("embed_patches", "select_patches") for s in everyone}


def test_demo_nucleus_model_does_not_depend_on_the_sample_sheet(tmp_path, make_slide,
                                                                 venv_path_env):  # fmt: skip
    """With ``cells.model: demo`` the model is trained on the ground-truth tiles' slides only:
    its inputs are the GT index and those slides, so appending slides to the sheet does not
    retrain it (and re-segment every slide)."""
    work = tmp_path / "wf"
    slides = [make_slide(f"s{i}", 1024, 1024, mpp=0.5, seed=i) for i in range(3)]
    gt = work / "gt"
    gt.mkdir(parents=True)
    (gt / "index.csv").write_text(
        "slide_id,x,y,width,height,mpp,label_path,n_nuclei\ns1,0,0,256,256,0.5,gt/a.tif,3\n"
    )
    cells = "cells:\n  model: demo\n  training:\n    gt_index: gt/index.csv\n"
    write_cohort(work, [f"{p.stem},{p}," for p in slides], extra_yaml=cells)
    proc = snakemake(work, venv_path_env, "-n", "out/models/stardist_demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    block = proc.stdout.split("rule train_demo_stardist:")[1].split("\n\n")[0]
    inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
    assert "gt/index.csv" in inputs and str(slides[1]) in inputs
    assert "samples.csv" not in inputs and str(slides[0]) not in inputs
