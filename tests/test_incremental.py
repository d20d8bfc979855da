"""Incremental cohorts: cohort B appended to cohort A's sample sheet runs only B's per-slide jobs
and the aggregates (Snakemake's own dry-run job list), leaves A's outputs byte- and
mtime-identical, and a changed parameter re-runs only the steps that depend on it: Snakemake
re-runs a slide's job, whose steps keep every output still current (the steps run are read from
the job's log; grid parameters: test_workflow.py).

The chain is the whole per-slide one (tissue and tiles; patch embeddings with the demo's tiny
ViT, selection, StarDist nuclei with the tests' small trained model, cell embeddings, cache)
on 1024 x 1024 px slides, with the tiling summary as the aggregate."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_workflow import SUMMARY, planned_jobs, snakemake, snapshot, steps_of_job, write_cohort

pytestmark = pytest.mark.workflow

EMBED = (
    "embed:\n  encoder: tiny-vit\n  checkpoint: demo\n  num_workers: 0\n"
    "  precision: {precision}\n  selection:\n"
)
SELECTION = "    n_candidates: 4\n    top_k: {top_k}\n"
CELLS = "cells:\n  model: {model}\n  mpp: 0.5\n"
PER_SLIDE = ("prepare_slide", "extract_slide")
GPU_STEPS = ["embed_patches", "select_patches", "segment_cells", "embed_cells", "build_cache"]


def config(model: Path, top_k: int = 2, precision: str = "auto") -> str:
    return (
        EMBED.format(precision=precision)
        + SELECTION.format(top_k=top_k)
        + CELLS.format(model=model)
    )


def targets(slides: list[str]) -> list[str]:
    return [SUMMARY, *(f"out/cache/{s}.zarr" for s in slides)]


def outputs_of(out: Path, slides: list[str], folders=None) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file of these slides' outputs (all folders by default)."""
    folders = folders or ("tissue", "tiles", "embeddings", "cells", "cell_embeddings", "cache")
    snap = {}
    for sid in slides:
        for folder in folders:
            name = sid if folder == "tissue" else f"{sid}.zarr"
            snap.update(
                {f"{folder}/{name}/{k}": v for k, v in snapshot(out / folder / name).items()}
            )
        if "selection" in folders or folders is None:
            sel = out / "selection" / f"{sid}.csv"
            snap[f"selection/{sid}.csv"] = (sel.stat().st_mtime_ns, sel.read_bytes())
    return snap


def test_new_cohort_runs_only_its_slides_and_changed_parameters_only_their_steps(
    tmp_path, make_slide, trained, venv_path_env
):
    work, out = tmp_path / "wf", tmp_path / "wf" / "out"
    model = trained[0]
    a = [make_slide(f"a{i}", 1024, 1024, mpp=0.5, seed=i) for i in range(2)]
    b = [make_slide("b0", 1024, 1024, mpp=0.5, seed=10)]
    rows_a = [f"{p.stem},{p}," for p in a]
    rows_b = [f"{p.stem},{p}," for p in b]
    ids_a, ids_b = [p.stem for p in a], [p.stem for p in b]

    write_cohort(work, rows_a, extra_yaml=config(model))
    proc = snakemake(work, venv_path_env, *targets(ids_a), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = outputs_of(out, ids_a)
    for sid in ids_a:
        assert steps_of_job(out, "extract_slide", sid) == (GPU_STEPS, [])

    # Cohort B appended: only B's per-slide jobs and the aggregate are planned.
    write_cohort(work, rows_a + rows_b, extra_yaml=config(model))
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
    upstream = outputs_of(out, everyone, ("tissue", "tiles", "embeddings"))
    # Another selection size: Snakemake re-runs each slide's GPU job, whose patch embeddings
    # are current and kept; the selection and everything made from it is redone.
    write_cohort(work, rows_a + rows_b, extra_yaml=config(model, top_k=3))
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert set(jobs) == {("extract_slide", s) for s in everyone}
    proc = snakemake(work, venv_path_env, *targets(everyone), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sid in everyone:
        assert steps_of_job(out, "extract_slide", sid) == (GPU_STEPS[1:], GPU_STEPS[:1])
    assert outputs_of(out, everyone, ("tissue", "tiles", "embeddings")) == upstream
    assert "top_k" in (out / "cache" / f"{ids_b[0]}.zarr" / "zarr.json").read_text()

    # Another embedding precision changes the embeddings: every GPU step of the slide re-runs
    # but the nuclei, which depend on which patches are selected, not on their embeddings: they
    # are kept when the selection came out the same; the tissue masks and grids stay.
    selection = out / "selection" / f"{ids_b[0]}.csv"
    selected_before = selection.read_bytes()
    write_cohort(work, rows_a + rows_b, extra_yaml=config(model, top_k=3, precision="bf16"))
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert set(jobs) == {("extract_slide", s) for s in everyone}
    proc = snakemake(work, venv_path_env, *targets(ids_b), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    same = selection.read_bytes() == selected_before
    kept = ["segment_cells"] if same else []
    ran = [s for s in GPU_STEPS if s not in kept]
    assert steps_of_job(out, "extract_slide", ids_b[0]) == (ran, kept)
    assert outputs_of(out, ids_b, ("tissue", "tiles")) == {
        k: v for k, v in upstream.items() if k.startswith(("tissue/b0", "tiles/b0"))
    }


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


def test_batch_jobs_run_their_slides_in_one_process_and_appended_rows_plan_only_their_batch(
    tmp_path, make_slide, trained, venv_path_env
):
    """``embed.slides_per_job: 2``: each batch of two rows of a cohort has one prepare and one
    extract job that declare all their slides' outputs (no per-slide job), the models loaded
    once per batch. Appending a row to a cohort whose last batch has room re-runs that batch
    only, keeping its finished slide; a new cohort forms its own batch; the other batches and
    their outputs are untouched."""
    import json

    work, out = tmp_path / "wf", tmp_path / "wf" / "out"
    slides = [make_slide(f"c{i}", 1024, 1024, mpp=0.5, seed=20 + i) for i in range(3)]
    rows = [f"{p.stem},{p},,,,one" for p in slides]
    cfg = config(trained[0]).replace("  precision:", "  slides_per_job: 2\n  precision:")

    def sheet(lines: list[str]) -> None:
        write_cohort(work, [], extra_yaml=cfg)
        (work / "samples.csv").write_text(
            "slide_id,path,mpp,split,label,cohort\n" + "\n".join(lines) + "\n"
        )

    sheet(rows)
    first = ["c0", "c1", "c2"]
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(first), "-n").stdout)
    assert not [r for r, _ in jobs if r in PER_SLIDE]
    assert sorted(r.split("_one")[0] for r, _ in jobs if "_one" in r) == [
        "extract_batch", "extract_batch", "prepare_batch", "prepare_batch"
    ]  # fmt: skip
    proc = snakemake(work, venv_path_env, *targets(first), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {
        p.stem: json.loads(p.read_text())["slides"]
        for p in (out / "batches" / "extract").glob("*.json")
    }
    assert sorted(map(sorted, records.values())) == [["c0", "c1"], ["c2"]]
    (full,) = [b for b, r in records.items() if len(r) == 2]
    (last,) = [b for b, r in records.items() if len(r) == 1]
    assert {s: r["ran"] for s, r in records[full].items()} == {"c0": GPU_STEPS, "c1": GPU_STEPS}
    log = (out / "logs" / "extract_batch" / f"{full}.log").read_text()
    assert log.count("timing setup=encoder") == 1 and log.count("timing setup=stardist") == 1
    assert steps_of_job(out, "prepare_batch", "c1", full) == (["tissue", "tiles"], [])
    before = outputs_of(out, ["c0", "c1"])

    # c3 joins the cohort's last batch (room for one more); d0 is a new cohort: its own batch.
    extra = [
        make_slide("c3", 1024, 1024, mpp=0.5, seed=30),
        make_slide("d0", 1024, 1024, mpp=0.5, seed=31),
    ]
    sheet([*rows, f"c3,{extra[0]},,,,one", f"d0,{extra[1]},,,,two"])
    everyone = [*first, "c3", "d0"]
    jobs = planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)
    assert not [s for _, s in jobs if s]
    planned = sorted(r for r, _ in jobs)
    assert planned == sorted([
        f"prepare_batch_{last.replace('-', '_').replace('.', '_')}",
        f"extract_batch_{last.replace('-', '_').replace('.', '_')}",
        *(r for r in planned if r.startswith(("prepare_batch_two", "extract_batch_two"))),
        "tiling_summary",
    ]) and len(planned) == 5, planned  # fmt: skip
    proc = snakemake(work, venv_path_env, *targets(everyone), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps_of_job(out, "extract_batch", "c2", last) == ([], GPU_STEPS)
    assert steps_of_job(out, "extract_batch", "c3", last) == (GPU_STEPS, [])
    assert steps_of_job(out, "prepare_batch", "c2", last) == ([], ["tissue", "tiles"])
    assert outputs_of(out, ["c0", "c1"]) == before
    assert len(list((out / "batches" / "extract").glob("*.json"))) == 3
    # Nothing is left to do.
    assert not planned_jobs(snakemake(work, venv_path_env, *targets(everyone), "-n").stdout)


def test_a_broken_slide_in_a_batch_leaves_its_batch_mates_complete(
    tmp_path, make_slide, trained, venv_path_env
):
    """A corrupt slide first in its batch: both batch jobs succeed, the slide gets failure
    placeholders (the GPU chain's carry the first failure, prepare_batch's), and its batch mate
    is processed to a complete cache; the tiling summary lists only the good slide."""
    import json

    from hwsi_model.data.failures import failure_of

    work, out = tmp_path / "wf", tmp_path / "wf" / "out"
    bad = make_slide("x0", 1024, 1024, mpp=0.5, seed=41)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    good = make_slide("g0", 1024, 1024, mpp=0.5, seed=40)
    cfg = config(trained[0]).replace("  precision:", "  slides_per_job: 2\n  precision:")
    write_cohort(work, [f"x0,{bad},", f"g0,{good},"], extra_yaml=cfg)
    proc = snakemake(work, venv_path_env, *targets(["x0", "g0"]), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert failure_of(out / "cache" / "g0.zarr") is None
    cache = json.loads((out / "cache" / "g0.zarr" / "zarr.json").read_text())["attributes"]
    assert cache["complete"] is True
    failure = failure_of(out / "cache" / "x0.zarr")
    assert failure.job == "extract_batch" and failure.first.job == "prepare_batch"
    assert failure_of(out / "tiles" / "x0.zarr").job == "prepare_batch"
    (record,) = (out / "batches" / "extract").glob("*.json")
    slides = json.loads(record.read_text())["slides"]
    assert slides["g0"]["ran"] == GPU_STEPS and "excluded" in slides["x0"]
    summary = (out / "tiles" / "summary.tsv").read_text()
    assert "g0" in summary and "x0" not in summary
