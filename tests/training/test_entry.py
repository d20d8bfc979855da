"""The command line runs without a launcher (single process, gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import tiny_model_config

from hwsi_model.training.entry import load_stage_settings
from hwsi_model.training.stage_config import StageConfig, lr_lambda


def test_cli_stage1_without_launcher(cohort, tiny_text_encoder, tmp_path: Path) -> None:
    model_cfg = tmp_path / "model.json"
    tiny_model_config(tiny_text_encoder).save(model_cfg)
    settings = tmp_path / "stage1.yaml"
    settings.write_text("micro_batch_size: 3\nepochs: 1\nlr: 0.003\n")
    # No launcher variables, and not the port of a process group an earlier test left open.
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist}
    out = tmp_path / "stage1"
    cmd = [
        sys.executable, "-m", "hwsi_model.training.entry", "--stage", "1",
        "--manifest", str(cohort["manifest"]), "--reports", str(cohort["reports"]),
        "--model-config", str(model_cfg), "--config", str(settings), "--set", "max_steps=1",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 1 and (out / "model" / "model.safetensors").exists()
    assert json.loads((out / "stage_config.json").read_text())["max_steps"] == 1


def test_settings_and_deepspeed_config(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"zero_stage": 3, "precision": "bf16", "grad_accum": 2}))
    cfg = load_stage_settings(path, 3, ["lr=0.001", "llm_tuning=full"])
    assert cfg.stage == 3 and cfg.lr == 0.001 and cfg.llm_tuning == "full"
    ds = cfg.deepspeed_config(world_size=4)
    assert ds["train_batch_size"] == cfg.micro_batch_size * 2 * 4
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["stage"] == 3
    assert ds["zero_allow_untested_optimizer"]
    with pytest.raises(ValueError, match="unknown training option"):
        load_stage_settings(None, 1, ["learning_rate=1"])
    with pytest.raises(ValueError, match="precision"):
        StageConfig(precision="fp8")
    f = lr_lambda(StageConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1), 10)
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == 1.0 and f(10) == pytest.approx(0.1)


def test_shipped_gpu_settings_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
    for stage in (1, 2, 3):
        cfg = load_stage_settings(root / f"stage{stage}_gpu.yaml", stage)
        assert cfg.precision == "bf16" and cfg.deepspeed_config(8)["bf16"]["enabled"]


def test_a_validation_split_without_text_is_an_error_not_silence(cohort) -> None:
    """Validation slides whose items are missing stop the run (early stopping would silently
    switch off); without validation (validate: false) the stage trains."""
    from hwsi_model.training.entry import build_datasets

    manifest, reports, train_only = cohort["manifest"], cohort["reports"], [cohort["vqa_train"]]
    with pytest.raises(ValueError, match=r"split 'val' .*set validate: false"):
        build_datasets(3, manifest, reports, train_only)
    train, val = build_datasets(3, manifest, reports, train_only, val_split=None)
    assert len(train) > 0 and val is None
    _, val = build_datasets(3, manifest, reports, [*train_only, cohort["vqa_val"]])
    assert val is not None and len(val) > 0
