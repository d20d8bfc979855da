"""The Snakemake workflow end to end on small cohorts (real and synthetic slides)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwsi_model.data.failures import failure_of
from hwsi_model.data.stores.cache import validate_cache

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


SUMMARY = "out/tiles/summary.tsv"  # target of the tiling-only runs (no StarDist model needed)
MANIFEST = "out/manifest.csv"  # all per-slide steps up to the caches (no training)


def snakemake(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # Targets and options first: --configfile takes several values.
    cmd = [
        "snakemake",
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def planned_jobs(output: str) -> list[tuple[str, str | None]]:
    """(rule, slide wildcard) of every job in a dry run's output."""
    jobs: list[tuple[str, str | None]] = []
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            jobs.append((m.group(1), None))
            continue
        m = re.match(r"^wildcards: .*?\bslide=([^,\s]+)", line.strip())
        if m and jobs:
            jobs[-1] = (jobs[-1][0], m.group(1))
    return jobs


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """mtime (ns) and bytes of every file under ``folder`` but Snakemake's own marker of a
    directory output (``.snakemake_timestamp``, touched whenever the job runs, even when the
    job kept the folder's contents)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


def steps_of_job(
    out: Path, rule: str, slide: str, job: str | None = None
) -> tuple[list[str], list[str]]:
    """(steps run, steps kept as current) by the last run of a slide's job, from its log
    (``logs/{rule}/{job}.log``; ``job``: the slide, or the batch of a batch job)."""
    log = (out / "logs" / rule / f"{job or slide}.log").read_text()
    m = re.findall(rf"slide '{re.escape(slide)}': ran (.*); kept (.*)$", log, re.M)
    assert m, log[-2000:]
    ran, kept = m[-1]
    return tuple([] if v == "nothing" else v.split(", ") for v in (ran, kept))


def write_cohort(workdir: Path, rows: list[str], extra_yaml: str = "", **config) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "samples.csv").write_text("slide_id,path,mpp\n" + "\n".join(rows) + "\n")
    lines = ["samples: samples.csv", "outdir: out", "region_size: 4"]
    lines += [f"{k}: {v}" for k, v in config.items()]
    (workdir / "config.yaml").write_text("\n".join(lines) + "\n" + extra_yaml)


@pytest.mark.parametrize("slides_per_job", [1, 2])
def test_lint_is_clean(tmp_path, cmu_slide, venv_path_env, slides_per_job):
    """Per-slide rules, and the generated batch rules (two slides of one batch)."""
    extra = f"embed:\n  slides_per_job: {slides_per_job}\n"
    write_cohort(tmp_path, [f"cmu,{cmu_slide},", f"cmu2,{cmu_slide},"], extra_yaml=extra)
    proc = snakemake(tmp_path, venv_path_env, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr
    assert "your workflow is in a good condition" in proc.stdout + proc.stderr


def test_unknown_config_key_is_named(tmp_path, cmu_slide, venv_path_env):
    write_cohort(tmp_path, [f"cmu,{cmu_slide},"], tisue="{}")
    proc = snakemake(tmp_path, venv_path_env, "-n")
    assert proc.returncode != 0
    assert "tisue" in proc.stdout + proc.stderr


def test_unset_llm_stops_a_training_plan_naming_the_key(tmp_path, cmu_slide, venv_path_env):
    """No demo default: a run that trains needs training.llm; extraction alone does not."""
    training = "training:\n  reports: r.jsonl\n  instructions: [v.json]\n"
    write_cohort(tmp_path, [f"cmu,{cmu_slide},"], extra_yaml=training)
    proc = snakemake(tmp_path, venv_path_env, "-n")
    assert proc.returncode != 0
    assert "config key 'training.llm' is not set" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, venv_path_env, "-n", SUMMARY)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_packaged_llm_is_converted_once_for_the_stages_that_need_it(
    tmp_path, cmu_slide, venv_path_env
):
    training = "training:\n  reports: r.jsonl\n  instructions: [v.json]\n  llm: smollm2\n"
    write_cohort(tmp_path, [f"cmu,{cmu_slide},"], extra_yaml=training)
    for name in ("r.jsonl", "v.json"):
        (tmp_path / name).write_text("")
    proc = snakemake(tmp_path, venv_path_env, "-n", "out/training/stage2/model")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = [r for r, _ in planned_jobs(proc.stdout)]
    assert jobs.count("convert_packaged_llm") == 1 and "train" in jobs
    assert "out/models/smollm2" in proc.stdout


def test_bad_slide_id_in_sheet_stops_the_plan(tmp_path, cmu_slide, venv_path_env):
    write_cohort(tmp_path, [f"../cmu,{cmu_slide},"])
    proc = snakemake(tmp_path, venv_path_env, "-n")
    assert proc.returncode != 0
    assert "slide_id" in proc.stdout + proc.stderr


def test_cohort_with_broken_slides_then_incremental(
    tmp_path, slides_dir, make_slide, venv_path_env
):
    import pandas as pd

    work = tmp_path / "wf"
    quarter = make_slide("quarter", 2048, 2048, mpp=0.25)
    good = [
        f"cmu,{slides_dir / 'CMU-1-Small-Region.svs'},",
        f"quarter,{quarter},",
        f"boxes_mpp,{slides_dir / 'boxes.tiff'},0.5",
    ]
    bad = {
        "unreadable": (f"unreadable,{slides_dir / 'unreadable.svs'},", "cannot read pixel data"),
        "unopenable": (f"unopenable,{slides_dir / 'unopenable.tiff'},", "OpenSlide cannot open"),
        "nompp": (f"nompp,{slides_dir / 'boxes.tiff'},", "add an 'mpp' column"),
    }
    write_cohort(work, good + [row for row, _ in bad.values()])
    # No --keep-going needed: a slide that cannot be used is excluded, the cohort goes on.
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "out"
    for sid in ("cmu", "quarter", "boxes_mpp"):
        assert (out / "tiles" / f"{sid}.zarr" / "zarr.json").is_file(), proc.stderr[-3000:]
        assert (out / "qc" / "tiling" / f"{sid}.png").is_file()
    for sid, (_, reason) in bad.items():
        assert (
            failure_of(out / "tissue" / sid).reason
            == failure_of(out / "tiles" / f"{sid}.zarr").reason
        )
        assert not (out / "tiles" / f"{sid}.zarr" / "zarr.json").exists()
        lines = (out / "logs" / "prepare_slide" / f"{sid}.log").read_text().splitlines()
        said = [ln for ln in lines if " WARNING " in ln or " ERROR " in ln]
        assert len(said) == 1 and f"slide '{sid}' excluded" in said[0] and reason in said[0]
        assert f"slide '{sid}' excluded" in proc.stderr  # the end-of-run summary
    summary = pd.read_csv(out / "tiles" / "summary.tsv", sep="\t")
    assert sorted(summary.slide_id) == ["boxes_mpp", "cmu", "quarter"]
    check = subprocess.run(["hwsi", "check", str(out)], capture_output=True, text=True,
                           env=venv_path_env)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "EXCLUDED  nompp: prepare_slide (tissue): " in check.stdout
    assert "3 slide(s) excluded" in check.stdout

    # The sheet gains the missing mpp: that slide's job and the aggregate re-run, nothing else.
    fixed = [*good, bad["nompp"][0] + "0.5", bad["unreadable"][0], bad["unopenable"][0]]
    write_cohort(work, fixed)
    jobs = planned_jobs(snakemake(work, venv_path_env, SUMMARY, "-n").stdout)
    assert sorted(jobs) == [("prepare_slide", "nompp"), ("tiling_summary", None)]
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "tiles" / "nompp.zarr" / "zarr.json").is_file()
    assert failure_of(out / "tissue" / "nompp") is None
    # One command retries the others (their placeholders removed); the files are still bad.
    retry = subprocess.run(["hwsi", "retry-failed", str(out)], capture_output=True, text=True,
                           env=venv_path_env)  # fmt: skip
    assert retry.returncode == 0 and "2 slide(s): 6 failure placeholder(s)" in retry.stdout
    jobs = planned_jobs(snakemake(work, venv_path_env, SUMMARY, "-n").stdout)
    assert sorted(jobs) == [("prepare_slide", "unopenable"), ("prepare_slide", "unreadable"),
                            ("tiling_summary", None)]  # fmt: skip

    # Drop the broken slides: only the aggregate step runs.
    write_cohort(work, good)
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (out / "tiles" / "summary.tsv").read_text()
    assert "quarter" in summary and "\t512\t" in summary
    proc = snakemake(work, venv_path_env, SUMMARY, "-n")
    assert planned_jobs(proc.stdout) == [], proc.stdout

    # Add one slide: the plan holds that slide's jobs and the aggregates, nothing else.
    extra = work / "extra.tiff"
    shutil.copy(quarter, extra)
    write_cohort(work, [*good, f"extra,{extra},"])
    proc = snakemake(work, venv_path_env, SUMMARY, "-n")
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout)
    per_slide = {(r, s) for r, s in jobs if s is not None}
    assert per_slide == {("prepare_slide", "extra")}
    assert {r for r, s in jobs if s is None} == {"tiling_summary"}

    # A parameter that changes the grid re-runs the tiles, not the tissue masks: Snakemake
    # re-runs each slide's job, which keeps the current masks (bytes and mtimes).
    masks = snapshot(out / "tissue")
    write_cohort(work, good, patch_size=128)
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sid in ("cmu", "quarter", "boxes_mpp"):
        assert steps_of_job(out, "prepare_slide", sid) == (["tiles"], ["tissue"])
    assert snapshot(out / "tissue") == masks
    assert "\t128\t" in (out / "tiles" / "summary.tsv").read_text()


def test_cells_workflow_and_new_slides(tmp_path, cohort, trained, venv_path_env):
    """The whole per-slide chain on two demo slides (cache + manifest), then a third is added."""
    import pandas as pd

    sheet = pd.read_csv(cohort / "samples.csv")
    rows = [f"{s},{cohort / p}," for s, p in zip(sheet.slide_id, sheet.path, strict=True)]
    cells = (
        f"cells:\n  model: {trained[0]}\n  mpp: 0.5\n"
        "embed:\n  encoder: tiny-vit\n  checkpoint: demo\n  num_workers: 0\n"
        "  selection:\n    n_candidates: 4\n    top_k: 2\n"
    )
    work = tmp_path / "wf"
    write_cohort(work, rows[:2], extra_yaml=cells)
    proc = snakemake(work, venv_path_env, MANIFEST, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "out"
    for sid in sheet.slide_id[:2]:
        assert (out / "cells" / f"{sid}.zarr" / "zarr.json").is_file()
        assert (out / "cells" / f"{sid}.geojson").is_file()
        assert (out / "qc" / "cells" / f"{sid}.png").is_file()
        assert validate_cache(out / "cache" / f"{sid}.zarr") == []
    manifest = pd.read_csv(out / "manifest.csv")
    assert sorted(manifest.slide_id) == sorted(sheet.slide_id[:2])
    assert manifest.n_cells.sum() > 0 and (manifest.n_selected > 0).all()
    # Every store is valid, records its provenance and was made from the current upstream ones.
    check = subprocess.run(["hwsi", "check", str(out)], capture_output=True, text=True,
                           env=venv_path_env)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "10 valid, 0 bad store(s)" in check.stdout
    assert manifest.provenance_id.str.len().eq(16).all()
    write_cohort(work, rows[:3], extra_yaml=cells)
    jobs = planned_jobs(snakemake(work, venv_path_env, MANIFEST, "-n").stdout)
    new = sheet.slide_id[2]
    per_slide = ("prepare_slide", "extract_slide")
    assert {(r, s) for r, s in jobs if s is not None} == {(r, new) for r in per_slide}
    assert {r for r, s in jobs if s is None} == {"manifest"}


def test_cohort_with_a_corrupt_and_an_mpp_less_slide_trains_and_evaluates(
    tmp_path, cohort, trained, make_slide, venv_path_env
):
    """Issue 16's acceptance: a corrupt and an mpp-less slide among good ones; the workflow
    runs to a trained model and an evaluation that names both; fixing the sheet's mpp re-runs
    that slide's jobs and what is built from the cohort, no other slide's."""
    import json

    import pandas as pd
    from tiny_models import build_tiny_llm

    # A tiny LLM over the training instructions' words (the demo's build_demo_llm pretrains one
    # for minutes); the text encoder is the offline MiniLM.
    words = re.findall(r"[A-Za-z]+", (cohort / "vqa" / "train.json").read_text())
    llm = build_tiny_llm(tmp_path / "llm", sorted(set(words)), hidden=32, layers=1)
    sheet = pd.read_csv(cohort / "samples.csv")
    # A test slide whose copy was cut short, a training slide without resolution.
    cut = sorted(sheet.slide_id[sheet.split == "test"])[-1]
    bare = sorted(sheet.slide_id[sheet.split == "train"])[-1]
    good = sheet[~sheet.slide_id.isin([bare, cut])]
    rows = [f"{r.slide_id},{cohort / r.path},,{r.split}" for r in good.itertuples()]
    full = (cohort / sheet.set_index("slide_id").path[cut]).read_bytes()
    corrupt = tmp_path / f"{cut}.tiff"
    corrupt.write_bytes(full[: len(full) // 2])
    nompp = make_slide(bare, 1024, 1024, mpp=None)
    rows += [f"{cut},{corrupt},,test", f"{bare},{nompp},,train"]
    model = "{hidden_size: 32, num_layers: 1, num_heads: 2}"
    stage = "{epochs: 1, micro_batch_size: 2, zero_stage: 0, precision: fp32}"
    extra = (
        f"cells:\n  model: {trained[0]}\n  mpp: 0.5\n"
        "embed:\n  encoder: tiny-vit\n  checkpoint: demo\n  num_workers: 0\n"
        "  selection:\n    n_candidates: 4\n    top_k: 2\n"
        f"training:\n  reports: {cohort / 'reports.jsonl'}\n"
        f"  instructions: [{cohort / 'vqa' / 'train.json'}]\n  llm: {llm}\n  baselines: []\n"
        f"  model:\n    visual: {{ccaf: {model}, region: {model}, slide: {model},"
        " projector: {align_dim: 32}}\n    max_visual_tokens: 16\n"
        f"  stage1: {stage}\n  stage2: {stage}\n  stage3: {stage}\n"
        f"evaluation:\n  test: [{cohort / 'vqa' / 'test.json'}]\n"
    )
    work = tmp_path / "wf"
    write_cohort(work, [], extra_yaml=extra)
    (work / "samples.csv").write_text("slide_id,path,mpp,split\n" + "\n".join(rows) + "\n")
    proc = snakemake(work, venv_path_env, "--cores", "2", "--keep-going")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = work / "out"
    manifest = pd.read_csv(out / "manifest.csv")
    assert sorted(manifest.slide_id) == sorted(good.slide_id)
    failures = pd.read_csv(out / "failures.tsv", sep="\t").set_index("slide_id")
    assert sorted(failures.index) == sorted([bare, cut])
    assert failures.error[bare] == "MissingMppError"
    assert failures.error[cut] in ("SlideOpenError", "SlideReadError")
    assert (failures.job == "prepare_slide").all()
    assert (out / "training" / "stage3" / "model" / "config.json").is_file()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {s["slide_id"] for s in metrics["excluded_slides"]} == {bare, cut}
    assert metrics["left_out"]["slides"] == [cut] and metrics["left_out"]["items"] > 0
    report = (out / "evaluation" / "report.html").read_text()
    assert "2 slide(s) of the cohort were excluded" in report
    assert bare in report and cut in report and "add an" in report

    # The sheet gets the bare slide's mpp: its two jobs re-run, no other slide's.
    rows[-1] = f"{bare},{nompp},0.5,train"
    (work / "samples.csv").write_text("slide_id,path,mpp,split\n" + "\n".join(rows) + "\n")
    jobs = planned_jobs(snakemake(work, venv_path_env, "-n").stdout)
    assert {(r, s) for r, s in jobs if s is not None} == {
        ("prepare_slide", bare),
        ("extract_slide", bare),
    }
    assert {"manifest", "tiling_summary"} <= {r for r, s in jobs if s is None}
