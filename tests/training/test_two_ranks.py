"""Stage 1 through DeepSpeed with two gloo processes on the CPU.

Each rank sees half of every global batch (the sampler shards it) and gathers the other rank's
embeddings as contrastive negatives; after the all-reduced updates both ranks must hold exactly
the same weights, and those weights must differ from the start (training happened).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from train_helpers import D_C, D_P, tiny_model_config

from hwsi_model.training.engine import train_stage
from hwsi_model.training.entry import build_datasets
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import new_stage1_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, cohort: dict, text_encoder: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    cfg = StageConfig(stage=1, micro_batch_size=1, epochs=2, lr=3e-3, checkpoint_every=100)
    train, _ = build_datasets(1, cohort["manifest"], cohort["reports"])
    torch.manual_seed(0)  # the same starting weights on both ranks
    model = new_stage1_model(tiny_model_config(Path(text_encoder)), cfg, D_P, D_C)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_stage(model, cfg, train, Path(out) / "run", progress=False)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save(
        {"start": start, "end": weights, "steps": result.steps},
        Path(out) / f"rank{rank}.pt",
    )


def test_two_ranks_end_with_identical_weights(cohort, tiny_text_encoder, tmp_path) -> None:
    args = (_free_port(), cohort, str(tiny_text_encoder), str(tmp_path))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # 6 training slides, 1 per rank per step -> 3 steps per epoch, 2 epochs.
    assert r0["steps"] == r1["steps"] == 6
    for name in r0["start"]:
        assert torch.equal(r0["start"][name], r1["start"][name]), name
    moved = [n for n in r0["end"] if not torch.equal(r0["end"][n], r0["start"][n])]
    assert any(n.startswith("visual.") for n in moved), "no visual weight was trained"
    for name, p in r0["end"].items():
        assert torch.equal(p, r1["end"][name]), f"ranks differ in {name}"
    assert (tmp_path / "run" / "model" / "config.json").exists()
