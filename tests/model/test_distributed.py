"""Negatives gathered across two gloo processes give the single-process loss and gradients."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F  # noqa: N812

from hwsi_model.model.configuration import LossConfig
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.losses import HierarchicalContrastiveLoss

# Rank 0 holds slides 0-2 (up to 4 regions), rank 1 slides 3-4 (up to 3 regions).
SPLIT = ((0, 3, 4), (3, 5, 3))


def full_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 2, 8, generator=g), dim=-1)
    vm = torch.ones(5, 4, dtype=torch.bool)
    vm[3:, 3] = False  # rank 1's slides have 3 regions
    vm[1, 2:] = False
    return v, vm, t


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        v, vm, t = full_data()
        lo, hi, u = SPLIT[rank]
        v_local = v[lo:hi, :u].clone().requires_grad_(True)
        loss_fn = HierarchicalContrastiveLoss(LossConfig())
        loss, _ = loss_fn(
            {"region": UnitEmbeddings(v_local, vm[lo:hi, :u])},
            {"region": UnitEmbeddings(t[lo:hi], torch.ones(hi - lo, 2, dtype=torch.bool))},
        )
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": v_local.grad}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_gather_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    v, vm, t = full_data()
    v = v.clone().requires_grad_(True)
    loss_fn = HierarchicalContrastiveLoss(LossConfig())
    loss, _ = loss_fn(
        {"region": UnitEmbeddings(v, vm)},
        {"region": UnitEmbeddings(t, torch.ones(5, 2, dtype=torch.bool))},
    )
    loss.backward()
    for rank in range(2):
        res = torch.load(tmp_path / f"{rank}.pt")
        lo, hi, u = SPLIT[rank]
        torch.testing.assert_close(res["loss"], loss.detach())
        torch.testing.assert_close(res["grad"], v.grad[lo:hi, :u])
