"""What the data loader costs in training: the same DeepSpeed steps fed by the DataLoader
(Zarr caches read and collated per step) against fed from batches collated beforehand and held in
memory (model-only loop).

    python benchmarks/bench_training_loader.py --results demo/results --cohort demo/cohort \\
        --stage 3 --steps 40 --workers 0 2

Stage 1 starts a fresh visual model from ``results/training/stage1/model_config.json``; stage 3
starts from ``results/training/stage2/model`` (the demo's tiny LLM). Feeds: batches collated
beforehand (model only), the DataLoader reading the Zarr caches (per worker count), and the
DataLoader over the in-memory store (``in_memory``: caches read once, batches collated per
step). Prints slides/s, tokens/s and the loader's share ``(t_feed - t_preloaded) / t_feed``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("bench_training_loader")


def build(stage: int, results: Path, cohort: Path, micro_batch: int):
    from hwsi_model.training.entry import _model_config, build_datasets
    from hwsi_model.training.stage_config import StageConfig
    from hwsi_model.training.stage_model import load_stage_model, new_stage1_model

    cfg = StageConfig(stage=stage, micro_batch_size=micro_batch, epochs=1000, lr=1e-4)
    instructions = [cohort / "vqa/train.json"] if stage == 3 else []
    train, _ = build_datasets(
        stage, results / "manifest.csv", cohort / "reports.jsonl", instructions
    )
    if stage == 1:
        config = _model_config(results / "training/stage1/model_config.json")
        first = train[0].slide
        model = new_stage1_model(config, cfg, first.patch_emb.shape[1], first.cell_emb.shape[1])
    else:
        model = load_stage_model(results / f"training/stage{stage - 1}/model", cfg)
    return cfg, model, train


def make_engine(cfg, model):
    import deepspeed
    import torch

    from hwsi_model.training.stage_model import configure_trainable
    from hwsi_model.training.stage_module import StageModule

    configure_trainable(model, cfg)
    module = StageModule(model, cfg)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=opt, model_parameters=params, config=cfg.deepspeed_config(1)
    )
    return engine


def run_steps(engine, batches) -> tuple[float, int, int]:
    """Seconds, slides and tokens of one pass over ``batches`` (an iterable of TrainBatch)."""
    slides = tokens = 0
    t = time.perf_counter()
    for batch in batches:
        out = engine(batch)
        engine.backward(out.loss)
        engine.step()
        slides += len(batch)
        if out.attention_mask is not None:
            tokens += int(out.attention_mask.sum())
    return time.perf_counter() - t, slides, tokens


def main() -> None:
    import torch
    from torch.utils.data import DataLoader

    from hwsi_model.data.manifest import ManifestRow
    from hwsi_model.data.pairs import SlideStore, collate_examples
    from hwsi_model.logs import setup_logging
    from hwsi_model.training.distributed import init_deepspeed_distributed
    from hwsi_model.training.sampler import ResumableSampler

    p = argparse.ArgumentParser()
    p.add_argument("--results", default="demo/results")
    p.add_argument("--cohort", default="demo/cohort")
    p.add_argument("--stage", type=int, default=3, choices=(1, 3))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    setup_logging()
    for name in ("hwsi_model.training", "DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    init_deepspeed_distributed()
    torch.manual_seed(0)
    cfg, model, train = build(a.stage, Path(a.results), Path(a.cohort), a.micro_batch)
    engine = make_engine(cfg, model)
    n = a.steps * a.micro_batch
    sampler = ResumableSampler(len(train), seed=0)

    def indices() -> list[int]:
        out: list[int] = []
        epoch = 0
        while len(out) < n:
            sampler.set_epoch(epoch)
            out += list(sampler)
            epoch += 1
        return out[:n]

    order = indices()

    # The in-memory option for small cohorts: caches read once, batches collated per step.
    t0 = time.perf_counter()
    memory = copy.copy(train)
    memory.store = SlideStore(
        [ManifestRow(slide_id=s, cache=p, split="train") for s, p in train.store.paths.items()],
        in_memory=True,
    )
    load_all_s = time.perf_counter() - t0

    def loader(workers: int, ds=train) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=a.micro_batch,
            sampler=order,
            collate_fn=collate_examples,
            num_workers=workers,
        )

    run_steps(engine, list(loader(0))[:3])  # warm-up: first-step allocations, text caches
    t0 = time.perf_counter()
    preloaded = list(loader(0))
    collate_s = time.perf_counter() - t0
    rows = []
    for rep in range(a.repeats):
        secs, slides, tokens = run_steps(engine, preloaded)
        rows.append({"feed": "preloaded", "repeat": rep, "s": secs, "slides": slides,
                     "tokens": tokens})  # fmt: skip
        for w in a.workers:
            secs, slides, tokens = run_steps(engine, loader(w))
            rows.append({"feed": f"loader w={w}", "repeat": rep, "s": secs, "slides": slides,
                         "tokens": tokens})  # fmt: skip
        secs, slides, tokens = run_steps(engine, loader(0, memory))
        rows.append({"feed": "in-memory w=0", "repeat": rep, "s": secs, "slides": slides,
                     "tokens": tokens})  # fmt: skip
    best: dict[str, dict] = {}
    for r in rows:
        if r["feed"] not in best or r["s"] < best[r["feed"]]["s"]:
            best[r["feed"]] = r
    base = best["preloaded"]["s"]
    summary = {
        "stage": a.stage,
        "steps": a.steps,
        "micro_batch": a.micro_batch,
        "threads": torch.get_num_threads(),
        "read_and_collate_all_s": round(collate_s, 2),
        "in_memory_load_s": round(load_all_s, 2),
        "feeds": {
            k: {
                "s": round(r["s"], 2),
                "slides_per_s": round(r["slides"] / r["s"], 2),
                "tokens_per_s": round(r["tokens"] / r["s"], 1),
                "loader_share": round((r["s"] - base) / r["s"], 3),
            }
            for k, r in best.items()
        },
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
