"""Forward + backward time and peak memory of the visual side per slide: hierarchy vs flat tokens.

For 16, 64 and 256 regions of a synthetic slide with paper-like sizes (patch and cell embeddings
of width 768, regions of 16 x 16 patches with about 60 % tissue, K = 16 selected patches per
region, 20-40 cells per selected patch), one training step on CPU of

- ``hierarchy``: CCAF (2 layers, 2 heads, width 768) + region encoder (2 layers, width 768) +
  slide encoder (2 layers) + projectors of all four scales into the alignment space (512) and the
  LLM width (3584, Qwen2.5-7B), i.e. everything of MLLM-HWSI before the LLM;
- ``flat``: the SlideChat-style baseline's token path, every tissue patch one token through one
  projector (LayerNorm -> Linear -> GELU -> Linear) into the LLM width. SlideChat adds a LongNet
  slide encoder over all patches, so this is a lower bound of its visual side.

The LLM columns give the number of visual tokens each sends to the LLM and a lower bound of the
LLM's fwd+bwd cost for them (6 x 7.6e9 FLOP per token, Qwen2.5-7B, attention not counted).

Each configuration runs in a fresh subprocess. Peak memory is the growth of the process's maximum
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) during the measured steps, above
its high-water mark after building the inputs and the model and one small warm-up step.

Usage::

    python benchmarks/bench_visual_side.py [--regions 16 64 256] [--repeats 1] [--threads 2]
        [--no-checkpointing] [--json results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import statistics
import subprocess
import sys
import time

import torch

from hwsi_model.model.batch import SlideTensors, collate_slides
from hwsi_model.model.configuration import (
    CCAFConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SlideEncoderConfig,
    VisualConfig,
)
from hwsi_model.model.hierarchy import HierarchicalVisualEncoder
from hwsi_model.model.projectors import ScaleProjector

log = logging.getLogger("bench_visual_side")

D_P = D_C = 768
WIDTH = 768
S = 16
K = 16
TISSUE = 0.6
CELLS = (20, 40)
LLM_HIDDEN = 3584  # Qwen2.5-7B
LLM_PARAMS = 7.6e9
MAX_VISUAL_TOKENS = 1024


def synthetic_slide(n_regions: int, seed: int = 0) -> SlideTensors:
    """A slide in the cache contract: ``n_regions`` regions on a square-ish region grid."""
    g = torch.Generator().manual_seed(seed)
    tissue = torch.rand(n_regions, S * S, generator=g) < TISSUE
    tissue[:, 0] = True
    counts = tissue.sum(1)
    grid = torch.full((n_regions, S * S), -1, dtype=torch.int64)
    grid[tissue] = torch.arange(int(counts.sum()))
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)[:-1]])
    selected = torch.full((n_regions, K), -1, dtype=torch.int64)
    for r in range(n_regions):
        n = int(counts[r])
        selected[r, : min(K, n)] = starts[r] + torch.randperm(n, generator=g)[:K]
    m = int((selected >= 0).sum())
    cells = torch.randint(CELLS[0], CELLS[1] + 1, (m,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), cells.cumsum(0)])
    side = int(n_regions**0.5 + 0.999)
    r_idx = torch.arange(n_regions)
    return SlideTensors(
        patch_emb=torch.randn(int(counts.sum()), D_P, generator=g).half(),
        region_grid=grid.view(n_regions, S, S),
        region_pos=torch.stack([r_idx // side, r_idx % side], dim=1),
        selected=selected,
        cell_emb=torch.randn(int(offsets[-1]), D_C, generator=g).half(),
        cell_pos=torch.rand(int(offsets[-1]), 2, generator=g),
        cell_offsets=offsets,
    )


def visual_config(checkpointing: bool) -> VisualConfig:
    return VisualConfig(
        patch_dim=D_P,
        cell_dim=D_C,
        ccaf=CCAFConfig(hidden_size=WIDTH, num_layers=2, num_heads=2),
        region=RegionEncoderConfig(hidden_size=WIDTH, num_layers=2, num_heads=12, region_size=S),
        slide=SlideEncoderConfig(hidden_size=WIDTH, num_layers=2, num_heads=12),
        projector=ProjectorConfig(align_dim=512, llm_hidden_size=LLM_HIDDEN),
        gradient_checkpointing=checkpointing,
    )


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_worker(method: str, n_regions: int, repeats: int, checkpointing: bool) -> dict:
    """One configuration in this process; returns the measurements."""
    torch.manual_seed(0)
    slide = synthetic_slide(n_regions)
    batch = collate_slides([slide])
    small = collate_slides([synthetic_slide(1, seed=1)])
    if method == "hierarchy":
        model = HierarchicalVisualEncoder(visual_config(checkpointing)).train()

        def step(b) -> None:
            out = model(b)
            units = list(model.align(out).values()) + list(model.to_llm(out).values())
            loss = sum(u.emb.float().square().mean() for u in units)
            loss.backward()

    elif method == "flat":
        model = ScaleProjector(D_P, LLM_HIDDEN).train()

        def step(b) -> None:
            tokens = model(b.patch_emb[b.patch_mask])
            tokens.float().square().mean().backward()

    else:
        raise ValueError(method)
    step(small)  # warm-up: kernels, allocator
    model.zero_grad(set_to_none=True)
    gc.collect()
    base = max_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    n_patches = slide.patch_emb.shape[0]
    m = slide.num_selected
    return {
        "method": method,
        "regions": n_regions,
        "patches": n_patches,
        "selected": m,
        "cells": int(slide.cell_emb.shape[0]),
        "ms": 1000.0 * statistics.median(times),
        "peak_mb": max_rss_mb() - base,
        "llm_tokens": min(1 + n_regions + 2 * m, MAX_VISUAL_TOKENS)
        if method == "hierarchy"
        else n_patches,
        "llm_tokens_uncapped": 1 + n_regions + 2 * m if method == "hierarchy" else n_patches,
    }


def run_in_subprocess(method: str, n_regions: int, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--regions",
        str(n_regions),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    if args.no_checkpointing:
        cmd.append("--no-checkpointing")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} / {n_regions} regions failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """Markdown table, one line per region count."""
    by = {(r["method"], r["regions"]): r for r in rows}

    def cell(r: dict | None, key: str, fmt: str = "{:.0f}") -> str:
        return fmt.format(r[key]) if r else "-"

    def llm_tflop(r: dict | None) -> str:
        return f"{6 * LLM_PARAMS * r['llm_tokens'] / 1e12:.0f}" if r else "-"

    lines = [
        "| regions | patches | selected | cells | hierarchy fwd+bwd ms | hierarchy peak MB "
        "| flat fwd+bwd ms | flat peak MB | LLM visual tokens: hierarchy (uncapped) / flat "
        "| 7B LLM fwd+bwd TFLOP (>=): hierarchy / flat |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sorted({r["regions"] for r in rows}):
        h, f = by.get(("hierarchy", n)), by.get(("flat", n))
        any_row = h or f
        lines.append(
            f"| {n} | {any_row['patches']} | {any_row['selected']} | {any_row['cells']} "
            f"| {cell(h, 'ms')} | {cell(h, 'peak_mb')} | {cell(f, 'ms')} | {cell(f, 'peak_mb')} "
            f"| {cell(h, 'llm_tokens', '{}')} ({cell(h, 'llm_tokens_uncapped', '{}')}) / "
            f"{cell(f, 'llm_tokens', '{}')} | {llm_tflop(h)} / {llm_tflop(f)} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--regions", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-checkpointing", action="store_true", help="keep all activations")
    p.add_argument("--methods", nargs="+", default=["hierarchy", "flat"])
    p.add_argument("--json", help="also write the measurements to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        res = run_worker(args.worker, args.regions[0], args.repeats, not args.no_checkpointing)
        print(json.dumps(res))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    t0 = time.perf_counter()
    for n in args.regions:
        for method in args.methods:
            rows.append(run_in_subprocess(method, n, args))
            log.info(
                "%s, %d regions: %.0f ms, %.0f MB", method, n, rows[-1]["ms"], rows[-1]["peak_mb"]
            )
    log.info("total %.0f s", time.perf_counter() - t0)
    ckpt = "off" if args.no_checkpointing else "on (hierarchy)"
    print(
        f"\nCPU, {args.threads} threads, torch {torch.__version__}, float32, one slide per step, "
        f"median of {args.repeats}, gradient checkpointing {ckpt}; peak = max-RSS growth\n"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
