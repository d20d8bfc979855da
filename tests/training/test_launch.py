"""The workflow's side: entry-point arguments and the ``train_stage`` script with a fake
Snakemake object (one training step in this process)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from train_helpers import tiny_model_config

from hwsi_model.training.launch import (
    StageRun,
    deepspeed_hostfile,
    expand_nodelist,
    main,
    slurm_gpus_per_node,
    text_encoder_folder,
    write_slurm_hostfile,
)
from hwsi_model.training.stage_config import StageConfig

REPO = Path(__file__).resolve().parents[2]


class Files(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


def test_stage_run_validates_settings_and_hands_a_launcher_one_file(tmp_path: Path) -> None:
    run = StageRun.from_settings(
        {"stage": 3, "epochs": 2, "llm_tuning": "full"}, manifest="m.csv", out=str(tmp_path),
        reports="r.jsonl", instructions=["a.json", "b.json"], init="prev", resume=True,
        model={"visual": {"ccaf": {"hidden_size": 8}}}, text_encoder="minilm",
    )  # fmt: skip
    assert run.cfg.epochs == 2 and run.cfg.llm_tuning == "full"
    assert Path(run.text_encoder).is_dir()  # "minilm" resolved to the offline package
    args = run.entry_args()
    settings = Path(args[args.index("--config") + 1])
    assert StageConfig.load(settings) == run.cfg  # the settings travel as one file, not argv
    assert "--set" not in args and args[-1] == "--resume"
    i = args.index("--instructions")
    assert args[i + 1 : i + 3] == ["a.json", "b.json"] and "--init" in args
    model_cfg = json.loads(Path(args[args.index("--model-config") + 1]).read_text())
    assert model_cfg["visual"]["ccaf"]["hidden_size"] == 8
    with pytest.raises(ValueError, match="unknown training option"):
        StageRun.from_settings({"stage": 1, "epoch": 2}, manifest="m.csv", out="o")
    assert text_encoder_folder("/x") == "/x"


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
            settings={"stage": 1, "micro_batch_size": 3, "max_steps": 1},
            run={"model": model, "llm": None, "text_encoder": str(tiny_text_encoder)},
            resume=True, instruction_format="auto",
        ),
        resources={"gpu": 0},
    )  # fmt: skip
    assert script.main(smk) == 0
    assert (out / "model" / "config.json").exists() and (out / "loss.png").exists()
    assert (out / "model_config.json").exists()
    assert "stage 1 step 1/1" in (tmp_path / "stage1.log").read_text()


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("node7", ["node7"]),
        ("a1,b[8-10],c", ["a1", "b8", "b9", "b10", "c"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
        ("x[1-2],x2,x[2-3]", ["x1", "x2", "x3"]),
        ("gpu-a100-[1-2].ib", ["gpu-a100-1.ib", "gpu-a100-2.ib"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["gpu[1-3", "gpu1-3]", "gpu[3-1]", "gpu[a-b]", "n[[1]]", ""])
def test_expand_nodelist_rejects_malformed_lists(bad: str) -> None:
    with pytest.raises(ValueError, match="node list"):
        expand_nodelist(bad)


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        ({"SLURM_GPUS_ON_NODE": "4", "SLURM_GPUS_PER_NODE": "2"}, 4),
        ({"SLURM_GPUS_PER_NODE": "8"}, 8),
        ({"SLURM_GPUS_PER_NODE": "a100:4"}, 4),
        ({"SLURM_GPUS_PER_NODE": "gpu:h100:2(S:0-1)"}, 2),
        ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
    ],
)
def test_slurm_gpus_per_node(env: dict[str, str], gpus: int) -> None:
    assert slurm_gpus_per_node(env) == gpus


def test_slurm_gpus_per_node_without_gpus_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="--gpus-per-node"):
        slurm_gpus_per_node({"SLURM_JOB_NODELIST": "n1"})


def test_hostfile_is_read_back_by_deepspeed(tmp_path: Path) -> None:
    from deepspeed.launcher.runner import fetch_hostfile

    env = {"SLURM_JOB_NODELIST": "gpu[01-03,07]", "SLURM_GPUS_ON_NODE": "4"}
    hosts = write_slurm_hostfile(tmp_path / "hostfile", env=env)
    assert hosts == ["gpu01", "gpu02", "gpu03", "gpu07"]
    pool = fetch_hostfile(str(tmp_path / "hostfile"))
    assert list(pool.items()) == [(h, 4) for h in hosts]
    # An explicit slot count wins over the allocation's GPUs.
    write_slurm_hostfile(tmp_path / "h2", env=env, slots=1)
    assert (
        tmp_path / "h2"
    ).read_text() == "gpu01 slots=1\ngpu02 slots=1\ngpu03 slots=1\ngpu07 slots=1\n"
    with pytest.raises(ValueError, match="slots"):
        deepspeed_hostfile(hosts, 0)
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        write_slurm_hostfile(tmp_path / "h3", env={"SLURM_GPUS_ON_NODE": "4"})


def test_hostfile_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[1-2]")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "2")
    assert main(["hostfile", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf").read_text() == "cn1 slots=2\ncn2 slots=2\n"
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert main(["hostfile", str(tmp_path / "hf2")]) == 1
    assert not (tmp_path / "hf2").exists()


def test_deepspeed_launcher_ranks_from_the_hostfile(tmp_path: Path) -> None:
    """The DeepSpeed launcher on node 1 of a 2-node x 2-slot hostfile starts ranks 2 and 3 of 4
    (``--no_ssh --node_rank``, as ``configs/deepspeed/deepspeed_train.sh`` runs it per node)."""
    env = {"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_GPUS_PER_NODE": "gpu:2"}
    write_slurm_hostfile(tmp_path / "hostfile", env=env)
    script = tmp_path / "record_env.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR']\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "with open(os.path.join(out, 'rank' + os.environ['RANK'] + '.json'), 'w') as f:\n"
        "    json.dump({k: os.environ[k] for k in keys}, f)\n"
    )
    cmd = [
        sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(tmp_path / "hostfile"),
        "--no_ssh", "--node_rank", "1", "--master_addr", "127.0.0.1", "--master_port", "29561",
        str(script), "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    assert sorted(ranks) == ["rank2.json", "rank3.json"]
    assert ranks["rank2.json"] == {
        "RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1"
    }  # fmt: skip
    assert ranks["rank3.json"]["LOCAL_RANK"] == "1"
