"""The Snakemake profiles (profiles/slurm, profiles/local): they parse, a dry run plans the
workflow with the intended resources and job groups, and the sbatch calls are the ones
snakemake-executor-plugin-slurm builds for the planned jobs (its own submit-string functions on
Snakemake's real job objects; nothing is submitted, no SLURM is needed)."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
SLURM = PROFILES / "slurm"
LOCAL = PROFILES / "local"
PROFILE_FILE = "config.v8+.yaml"

PREP_RULE = "prepare_slide"  # tissue + tiles of a slide (CPU)
GPU_RULE = "extract_slide"  # a slide's GPU chain: embeddings, selection, nuclei, cache
# embed.slides_per_job > 1: one rule per batch, named {kind}_{batch}; a profile names the kind.
BATCH_KINDS = ("prepare_batch", "extract_batch")


def load_profile(folder: Path) -> dict:
    return yaml.safe_load((folder / PROFILE_FILE).read_text())


@pytest.fixture(scope="module")
def workdir(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workflow folder on the 6-slide synthetic cohort with the demo models (all rules)."""
    return make_workdir(cohort, tmp_path_factory.mktemp("profiles"))


def make_workdir(cohort: Path, work: Path, slides_per_job: int = 1) -> Path:
    config = {
        "samples": str(cohort / "samples.csv"),
        "outdir": "out",
        "region_size": 4,
        "cells": {"model": "demo", "training": {"gt_index": str(cohort / "nuclei_gt/index.csv")}},
        "embed": {"checkpoint": "demo", "slides_per_job": slides_per_job},
        "training": {
            "reports": str(cohort / "reports.jsonl"),
            "instructions": [str(cohort / "vqa/train.json"), str(cohort / "vqa/val.json")],
            "llm": "demo",
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def snakemake_args(workdir: Path, *args: str) -> list[str]:
    return [
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]


def run_snakemake(workdir: Path, venv_env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = ["snakemake", *snakemake_args(workdir, *args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=venv_env, timeout=300)


def parse_dry_run(output: str) -> list[dict]:
    """Jobs of a dry run's output: rule, slide, group (None outside a group), resources."""
    jobs: list[dict] = []
    group = None
    for line in output.splitlines():
        if m := re.match(r"^\[.*\] Group job (\w+) ", line):
            group = m.group(1)
            continue
        if m := re.match(r"^( *)(?:local)?rule (\w+):", line):
            if not m.group(1):  # a top-level job ends the group listing
                group = None
            jobs.append({"rule": m.group(2), "slide": None, "group": group, "resources": {}})
        elif jobs and (m := re.match(r"^\s+wildcards: .*?\bslide=([^,\s]+)", line)):
            jobs[-1]["slide"] = m.group(1)
        elif jobs and (m := re.match(r"^\s+resources: (.*)$", line)):
            jobs[-1]["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    return jobs


def test_profiles_parse_as_snakemake_options() -> None:
    """Every key of both profiles is an option of this Snakemake (with the SLURM plugin)."""
    from snakemake.cli import get_argument_parser

    options = get_argument_parser()._option_string_actions
    for folder in (SLURM, LOCAL):
        profile = load_profile(folder)
        unknown = [key for key in profile if f"--{key}" not in options]
        assert not unknown, f"{folder.name}: not Snakemake options: {unknown}"
    slurm = load_profile(SLURM)
    assert slurm["executor"] == "slurm" and slurm["retries"] >= 1
    assert set(slurm["groups"]) == {PREP_RULE}
    assert set(slurm["group-components"]) == set(slurm["groups"].values())
    local = load_profile(LOCAL)
    assert "executor" not in local and local["keep-going"] is False


def test_profiles_name_only_rules_of_the_workflow(workdir: Path, venv_path_env: dict) -> None:
    proc = run_snakemake(workdir, venv_path_env, "--list-rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = set(proc.stdout.split())
    slurm = load_profile(SLURM)
    named = set(slurm["set-resources"]) | set(slurm["groups"])
    assert named <= rules | set(BATCH_KINDS), f"profile names unknown rules: {named - rules}"
    assert set(BATCH_KINDS) <= set(slurm["set-resources"])


def test_batch_rules_take_the_profile_resources_of_their_kind(
    cohort: Path, tmp_path: Path, venv_path_env: dict
) -> None:
    """Batched (4 slides per job: two batches of the 6 slides), every generated batch rule gets
    what the profile sets for its kind, and no per-slide job is planned."""
    work = make_workdir(cohort, tmp_path, slides_per_job=4)
    proc = run_snakemake(work, venv_path_env, "--profile", str(SLURM), "--dry-run", "--jobs", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = parse_dry_run(proc.stdout + proc.stderr)
    assert not [j for j in jobs if j["rule"] in (PREP_RULE, GPU_RULE)]
    for kind in BATCH_KINDS:
        batch = [j for j in jobs if j["rule"].startswith(kind + "_")]
        assert len(batch) == 2 and len({j["rule"] for j in batch}) == 2, jobs
        for job in batch:
            res = job["resources"]
            assert job["group"] is None
            if kind == "extract_batch":
                assert (res["slurm_partition"], res["gpu"], res["mem_mb"]) == ("gpu", "1", "16000")
            else:
                assert (res["slurm_partition"], res["mem_mb"]) == ("cpu", "4000")
                assert "gpu" not in res


def test_slurm_dry_run_plans_groups_and_resources(workdir: Path, venv_path_env: dict) -> None:
    proc = run_snakemake(
        workdir, venv_path_env, "--profile", str(SLURM), "--dry-run", "--jobs", "4"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    jobs = parse_dry_run(out)
    slides = {j["slide"] for j in jobs if j["rule"] == PREP_RULE}
    assert len(slides) == 6
    # One slide_prep group job holds the 6 slides' CPU jobs (32 slides fit in one).
    assert Counter(re.findall(r"Group job (\w+)", out)) == {"slide_prep": 1}
    for job in jobs:
        rule, res = job["rule"], job["resources"]
        if rule == PREP_RULE:
            assert job["group"] == "slide_prep"
            assert res["slurm_partition"] == "cpu" and "gpu" not in res
        else:
            assert job["group"] is None, job
        if rule in (GPU_RULE, "train"):
            assert res["gpu"] == "1" and res["slurm_partition"] == "gpu", job
        if rule == GPU_RULE:
            assert res["mem_mb"] == "16000"
    # One GPU job per slide.
    assert Counter(j["slide"] for j in jobs if j["rule"] == GPU_RULE) == dict.fromkeys(slides, 1)
    runs = [j["resources"] for j in jobs if j["rule"] == "train"]
    # Three stages, flat and flat_cells stages 2-3, text-only stage 3: one rule.
    assert len(runs) == 8
    assert all(r["nodes"] == "1" and r["mem_mb"] == "64000" for r in runs)


def test_local_dry_run_plans_the_same_jobs_ungrouped(workdir: Path, venv_path_env: dict) -> None:
    local = run_snakemake(workdir, venv_path_env, "--profile", str(LOCAL), "--dry-run")
    slurm = run_snakemake(
        workdir, venv_path_env, "--profile", str(SLURM), "--dry-run", "--jobs", "4"
    )
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    local_jobs = parse_dry_run(local.stdout)
    assert "Group job" not in local.stdout
    assert all(j["group"] is None for j in local_jobs)
    count = Counter((j["rule"], j["slide"]) for j in local_jobs)
    assert count == Counter((j["rule"], j["slide"]) for j in parse_dry_run(slurm.stdout))
    # Without the SLURM profile the rules keep their own resources (config: gpu 0).
    embed = next(j for j in local_jobs if j["rule"] == GPU_RULE)
    assert embed["resources"]["mem_mb"] == "8000" and embed["resources"]["gpu"] == "0"


@pytest.fixture(scope="module")
def submitted(workdir: Path) -> dict:
    """The jobs a SLURM run would submit, as Snakemake's job objects, with their sbatch calls.

    Snakemake runs in this process with the profile and ``--dry-run``: the scheduler hands each
    job (a group job or a single job) to the dry-run executor, which records it. A real run hands
    the same objects to the SLURM executor; there, resources are evaluated for remote execution
    (``Workflow.local_exec`` is False: a group's resources are the maximum over its steps, its
    runtime the sum), so they are re-evaluated that way before building the calls with the
    plugin's own ``get_submit_command`` and ``set_gres_string``.
    """
    import snakemake.executors.dryrun as dryrun
    from snakemake.cli import args_to_api, parse_args
    from snakemake.workflow import Workflow
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    recorded = []
    run_job = dryrun.Executor.run_job

    def record(self, job):
        recorded.append(job)
        return run_job(self, job)

    cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dryrun.Executor, "run_job", record)
        argv = snakemake_args(workdir, "--profile", str(SLURM), "--dry-run", "--jobs", "4")
        parser, args = parse_args(argv)
        try:
            assert args_to_api(args, parser)
        finally:
            os.chdir(cwd)
        settings = ExecutorPluginRegistry().get_plugin("slurm").get_settings(args)
        mp.setattr(Workflow, "local_exec", property(lambda self: False))
        for job in recorded:
            job._resources = None  # evaluated again as for the SLURM executor
        yield {"jobs": recorded, "settings": settings}


def sbatch_call(job, settings) -> str:
    """The plugin's sbatch command line for ``job`` (as ``Executor.run_job`` builds it)."""
    from snakemake_executor_plugin_slurm import Executor
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    validate_slurm_extra(job)
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": "LOG",
        "comment_str": f"rule_{job.name}",
        "account": "",
        # The plugin's partition choice (slurm_partition; no partition file is configured).
        "partition": Executor.get_partition_arg(SimpleNamespace(_partitions=None), job),
        "workdir": "WORKDIR",
    }
    return get_submit_command(job, params, settings=settings) + set_gres_string(job)


def flags(call: str) -> dict[str, str | None]:
    """sbatch options of a call: ``-p gpu`` / ``--gpus=1`` -> {"-p": "gpu", "--gpus": "1"}."""
    tokens = call.split()
    out: dict[str, str | None] = {}
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if "=" in tok and tok.startswith("--"):
            key, value = tok.split("=", 1)
            out[key] = value
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            out[tok] = tokens[i + 1]
            i += 1
        else:
            out[tok] = None
        i += 1
    return out


def test_sbatch_calls_of_the_planned_jobs(submitted: dict) -> None:
    jobs, settings = submitted["jobs"], submitted["settings"]
    remote = [j for j in jobs if not j.is_local]
    by_group: dict[str, list] = {}
    for job in remote:
        if job.is_group():
            by_group.setdefault(job.groupid, []).append(job)
    assert {k: len(v) for k, v in by_group.items()} == {"slide_prep": 1}
    # Local rules (manifest, summaries, demo builders) never go to SLURM.
    local_rules = {j.rule.name for j in jobs if not j.is_group() and j.is_local}
    assert {"manifest", "tiling_summary", "build_demo_encoder"} <= local_rules

    # slide_prep: 6 slides' CPU jobs, 1 CPU each, side by side (16 at most: `cores`).
    (prep,) = by_group["slide_prep"]
    assert Counter(j.rule.name for j in prep.jobs) == {PREP_RULE: 6}
    f = flags(sbatch_call(prep, settings))
    runtime = next(iter(prep.jobs)).resources.runtime  # side by side: one job's runtime
    assert f["-p"] == "cpu" and f["--cpus-per-task"] == "6" and f["--ntasks"] == "1"
    assert f["--mem"] == str(6 * 4000) and f["-t"] == str(runtime)
    assert "--gpus" not in f and "--gres" not in f

    # extract_slide: one slide's GPU chain, one GPU job per slide.
    chains = [j for j in remote if not j.is_group() and j.rule.name == GPU_RULE]
    assert len({j.wildcards.slide for j in chains}) == len(chains) == 6
    for job in chains:
        f = flags(sbatch_call(job, settings))
        assert f["-p"] == "gpu" and f["--gpus"] == "1" and f["--mem"] == "16000"
        assert f["-t"] == "240" and f["--cpus-per-task"] == str(job.threads)
        assert "--ntasks" not in f  # GPU jobs: no implicit task geometry

    single = {j.rule.name: j for j in remote if not j.is_group() and j.rule.name != "train"}
    stage1 = next(
        j
        for j in remote
        if not j.is_group() and j.rule.name == "train" and j.wildcards.run == "stage1"
    )
    f = flags(sbatch_call(stage1, settings))
    assert f["-p"] == "gpu" and f["--gpus"] == "1" and f["--nodes"] == "1"
    assert f["--mem"] == "64000" and f["-t"] == "2880"
    assert f["--cpus-per-task"] == str(stage1.threads)
    f = flags(sbatch_call(single["train_demo_stardist"], settings))
    assert f["-p"] == "cpu" and f["--mem"] == "8000" and "--gpus" not in f


def test_retries_ask_for_more_memory(submitted: dict) -> None:
    """Snakemake resubmits a failed job with attempt + 1; the profile's memory grows with it."""
    jobs, settings = submitted["jobs"], submitted["settings"]
    prep = next(j for j in jobs if j.is_group() and j.groupid == "slide_prep")
    features = next(j for j in jobs if not j.is_group() and j.rule.name == GPU_RULE)
    stage1 = next(j for j in jobs if not j.is_group() and j.rule.name == "train"
                  and j.wildcards.run == "stage1")  # fmt: skip
    try:
        for attempt, factor in ((2, 2), (3, 3)):
            for job in (prep, features, stage1):
                job.attempt = attempt
            assert flags(sbatch_call(prep, settings))["--mem"] == str(factor * 6 * 4000)
            assert flags(sbatch_call(features, settings))["--mem"] == str(factor * 16000)
            assert flags(sbatch_call(stage1, settings))["--mem"] == str(factor * 64000)
            # Only memory grows: runtime and GPUs stay.
            assert flags(sbatch_call(features, settings))["--gpus"] == "1"
    finally:
        for job in (prep, features, stage1):
            job.attempt = 1
