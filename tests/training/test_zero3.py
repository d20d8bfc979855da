"""Stage 3 under DeepSpeed ZeRO-3 with two gloo processes on the CPU (issue 15, item 4).

ZeRO-3 partitions every weight over the ranks, so a rank holds only its shard between steps.
The run must still train the full LLM, save a complete model folder (the weights gathered
first), and generate from the gathered weights; the saved folder must reload with exactly the
trained weights and answer exactly as the trained model does.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from train_helpers import D_C, D_P, tiny_model_config

from hwsi_model.model.checkpoint import load_model_folder, save_model_folder
from hwsi_model.training.engine import MODEL_DIR, train_stage
from hwsi_model.training.entry import build_datasets
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import load_stage_model, new_stage1_model

QUESTION = "What is the most likely diagnosis?\nA) Benign\nB) Low grade\nC) High grade"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, cohort: dict, init: str, llm: str, out: str) -> None:
    import deepspeed

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    cfg = StageConfig(
        stage=3, zero_stage=3, llm_tuning="full", micro_batch_size=1, epochs=1, lr=1e-2,
        checkpoint_every=100, aux_losses=False,
    )  # fmt: skip
    train, _ = build_datasets(
        3, cohort["manifest"], cohort["reports"], [cohort["vqa_train"]], val_split=None
    )
    torch.manual_seed(0)
    model = load_stage_model(init, cfg, llm_path=llm)
    start = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    result = train_stage(model, cfg, train, Path(out) / "run", progress=False)
    sample = train[0]
    from hwsi_model.data.pairs import collate_examples

    batch = collate_examples([sample])
    params = list(model.parameters())
    partitioned = sum(p.numel() for p in params)  # a rank's shard: ZeRO-3 left 0-size stubs
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        full = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.eval()
        answer = model.generate(batch.slides, [QUESTION], max_new_tokens=6)
    torch.save(
        {"start": start, "end": full, "answer": answer, "steps": result.steps,
         "partitioned": partitioned},
        Path(out) / f"rank{rank}.pt",
    )  # fmt: skip


def test_stage3_under_zero3_saves_and_generates_gathered_weights(
    cohort, tiny_text_encoder, tiny_llm, tmp_path
) -> None:
    config = tiny_model_config(tiny_text_encoder)
    config.llm_path = str(tiny_llm)
    torch.manual_seed(0)
    stage1 = new_stage1_model(config, StageConfig(stage=1), D_P, D_C)
    save_model_folder(stage1, tmp_path / "stage1")
    args = (_free_port(), cohort, str(tmp_path / "stage1"), str(tiny_llm), str(tmp_path))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"] > 0
    total = sum(p.numel() for p in r0["end"].values())
    assert r0["partitioned"] < total  # the weights really were partitioned between steps
    # Both ranks gathered the same full weights and gave the same answer.
    for name, p in r0["end"].items():
        assert torch.equal(p, r1["end"][name]), name
    assert r0["answer"] == r1["answer"]
    moved = [n for n, p in r0["start"].items() if not torch.equal(p, r0["end"][f"llm.{n}"])]
    assert moved, "full tuning left the LLM unchanged"
    # The saved folder holds exactly the gathered weights and answers the same.
    saved = load_model_folder(tmp_path / "run" / MODEL_DIR).eval()
    for name, p in saved.named_parameters():
        assert torch.equal(p, r0["end"][name]), name
    train, _ = build_datasets(
        3, cohort["manifest"], cohort["reports"], [cohort["vqa_train"]], val_split=None
    )
    from hwsi_model.data.pairs import collate_examples

    batch = collate_examples([train[0]])
    assert saved.generate(batch.slides, [QUESTION], max_new_tokens=6) == r0["answer"]
