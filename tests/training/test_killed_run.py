"""A training process killed with SIGKILL (no clean-up, as by the OOM killer or a node failure)
resumes from its last checkpoint, not from step 0. test_stages.py covers a run stopped cleanly
after a step (a job's time limit); this one kills the real process at an arbitrary point."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

from train_helpers import tiny_model_config

from hwsi_model.training.checkpoints import CHECKPOINT_DIR, FINGERPRINT_FILE
from hwsi_model.training.engine import MODEL_DIR

TOTAL = 30  # 6 training slides, micro-batch 3: 2 steps per epoch, 15 epochs


def test_sigkilled_run_resumes_from_its_last_checkpoint(cohort, tiny_text_encoder, tmp_path):
    model_cfg = tmp_path / "model.json"
    tiny_model_config(tiny_text_encoder).save(model_cfg)
    settings = tmp_path / "stage1.yaml"
    settings.write_text(
        "micro_batch_size: 3\nepochs: 15\nlr: 0.003\ncheckpoint_every: 1\nkeep_checkpoints: 2\n"
    )
    out = tmp_path / "stage1"
    args = [
        "--stage", "1", "--manifest", str(cohort["manifest"]), "--reports", str(cohort["reports"]),
        "--model-config", str(model_cfg), "--config", str(settings), "--out", str(out),
        "--no-progress", "--resume",
    ]  # fmt: skip
    # Both runs in their own process: no process group (or its port) stays in the test process.
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist}
    cmd = [sys.executable, "-m", "hwsi_model.training.entry", *args]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    latest = out / CHECKPOINT_DIR / "latest"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.is_file() and latest.read_text().strip() >= "step0000003":
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / MODEL_DIR).exists()  # the final model folder is written only at the end
    tag = latest.read_text().strip()
    step = int(tag.removeprefix("step"))
    assert 3 <= step < TOTAL and (out / CHECKPOINT_DIR / FINGERPRINT_FILE).is_file()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]  # the same command again
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == step and metrics["steps"] == TOTAL
    with open(out / "loss.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["split"] == "train"]
    assert steps == list(range(1, TOTAL + 1))  # no step twice, none missing
    prov = json.loads((out / MODEL_DIR / "provenance.json").read_text())
    assert prov["inputs"]["manifest"]["kind"] == "file"
    assert prov["inputs"]["caches"]["n"] == 9 and len(prov["id"]) == 16
