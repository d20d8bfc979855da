"""The workflow's side: entry-point arguments and the ``train_stage`` script with a fake
Snakemake object (one training step in this process)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

from train_helpers import tiny_model_config

from hwsi_model.training.launch import entry_args, text_encoder_folder, write_model_config

REPO = Path(__file__).resolve().parents[2]


class Files(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


def test_entry_args_drop_resources_and_resolve_minilm(tmp_path: Path) -> None:
    args = entry_args(
        3, "m.csv", "out", {"epochs": 2, "gpu": 1, "mem_mb": 9, "llm_tuning": "full"},
        reports="r.jsonl", instructions=["a.json", "b.json"], init="prev", resume=True,
    )  # fmt: skip
    assert args[args.index("--set") + 1 :] == ["epochs=2", 'llm_tuning="full"', "--resume"]
    assert args[args.index("--instructions") + 1 : args.index("--instructions") + 3] == [
        "a.json",
        "b.json",
    ]
    assert "--init" in args and "--model-config" not in args
    assert Path(text_encoder_folder("minilm")).is_dir()
    assert text_encoder_folder("/x") == "/x"
    assert write_model_config(None, tmp_path / "m.json") is None
    written = write_model_config({"visual": {"ccaf": {"hidden_size": 8}}}, tmp_path / "m.json")
    assert json.loads(Path(written).read_text())["visual"]["ccaf"]["hidden_size"] == 8


def test_workflow_script_runs_stage1(cohort, tiny_text_encoder, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "train_stage", REPO / "workflow_scripts" / "train_stage.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = tiny_model_config(tiny_text_encoder).to_dict()
    out = tmp_path / "training" / "stage1"
    smk = SimpleNamespace(
        input=Files(manifest=str(cohort["manifest"]), reports=str(cohort["reports"])),
        output=Files(model=str(out / "model")),
        log=[str(tmp_path / "stage1.log")],
        params=SimpleNamespace(
            stage=1, settings={"micro_batch_size": 3, "max_steps": 1, "gpu": 0}, model=model,
            llm=None, text_encoder=str(tiny_text_encoder), resume=True, instruction_format="auto",
        ),
        resources={"gpu": 0},
    )  # fmt: skip
    assert script.main(smk) == 0
    assert (out / "model" / "config.json").exists() and (out / "loss.png").exists()
    assert (out / "model_config.json").exists()
    assert "stage 1 step 1/1" in (tmp_path / "stage1.log").read_text()
