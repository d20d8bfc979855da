"""Seconds per training step of stages 2 and 3 with a given LLM on this machine (issue 15, item 2):
the demo's tiny LM against SmolLM2-135M-Instruct (``training.llm: smollm2``), LoRA and full.

    python benchmarks/bench_llm_step.py --results benchmarks/out/learning/results \
        --cohort benchmarks/out/learning/cohort [--steps 4]

It reuses a finished workflow run (its manifest, caches and stage-1 model: e.g. the learning
benchmark's), the demo's stage settings (config.yaml: micro-batch 5 in stage 2, 8 in stage 3)
and the cohort's training split; each stage runs ``--steps`` optimizer steps in a fresh process
and reports the median seconds per step and tokens per second from its ``loss.csv`` (the first
step, and the set-up and final checkpoint, left out). Results: ``benchmarks/llm_step.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def one_run(stage: int, tuning: str, llm: Path, init: Path, a: argparse.Namespace) -> dict:
    """Train ``stage`` from ``init`` for ``a.steps`` steps in a subprocess; its metrics."""
    demo = yaml.safe_load((REPO / "config.yaml").read_text())["training"][f"stage{stage}"]
    settings = {
        "stage": stage, "micro_batch_size": demo["micro_batch_size"], "lr": demo["lr"],
        "max_steps": a.steps, "epochs": 1000, "checkpoint_every": 10_000, "validate": False,
        "zero_stage": 2, "precision": "fp32", "in_memory": True, "llm_tuning": tuning,
        "aux_losses": False, "log_every": 1,
    }  # fmt: skip
    name = f"s{stage}_{tuning}_{llm.name}"
    cfg_path = a.out / f"{name}.json"
    cfg_path.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "hwsi_model.training.entry", "--stage", str(stage),
           "--config", str(cfg_path), "--manifest", str(a.results / "manifest.csv"),
           "--reports", str(a.cohort / "reports.jsonl"), "--init", str(init),
           "--out", str(a.out / name)]  # fmt: skip
    if stage == 2:
        cmd += ["--llm", str(llm)]
    else:
        cmd += ["--instructions", str(a.cohort / "vqa" / "train.json")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    m = json.loads((a.out / name / "metrics.json").read_text())
    with open(a.out / name / "loss.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and r["samples_per_s"]]
    # Per step from loss.csv (log_every 1): the first step (warm-up) and the final checkpoint
    # write are left out.
    per_step = [settings["micro_batch_size"] / float(r["samples_per_s"]) for r in rows[1:]]
    tokens = [float(r["tokens_per_s"]) for r in rows[1:]]
    return {
        "stage": stage,
        "tuning": tuning,
        "llm": llm.name,
        "wall_s": round(wall, 1),
        "steps": m.get("steps"),
        "train_s": m.get("seconds"),
        "micro_batch": settings["micro_batch_size"],
        "s_per_step_median": round(statistics.median(per_step), 2) if per_step else None,
        "tokens_per_s_median": round(statistics.median(tokens)) if tokens else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument(
        "--llm",
        nargs="+",
        default=["tiny_llm", "smollm2"],
        help="model folders under RESULTS/models (smollm2: converted if missing)",
    )
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument(
        "--stage1",
        type=Path,
        help="a stage-1 model folder (default: RESULTS/training/stage1/model)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "llm_step")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.llm:
        llm = a.results / "models" / name
        if name == "smollm2" and not (llm / "config.json").is_file():
            from hwsi_model.model.packaged_llm import convert_packaged_llm

            t0 = time.perf_counter()
            convert_packaged_llm("smollm2", llm)
            rows.append({"convert_smollm2_s": round(time.perf_counter() - t0, 1)})
        stage1 = a.stage1 or a.results / "training" / "stage1" / "model"
        rows.append(one_run(2, "full", llm, stage1, a))
        stage2 = a.out / f"s2_full_{llm.name}" / "model"
        for tuning in ("lora", "full"):
            rows.append(one_run(3, tuning, llm, stage2, a))
        print(json.dumps(rows, indent=1), flush=True)
    (REPO / "benchmarks" / "llm_step.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
