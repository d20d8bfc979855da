"""Three-stage training on a synthetic class-structured cohort (CPU, tiny models): throughput,
loss decrease, held-out closed-question accuracy and slide <-> report recall@1 against chance.

    python benchmarks/bench_training.py --slides 30 --out benchmarks/out/training

Slides of a class share patch/cell prototypes (plus noise); reports and questions follow the
demo cohort's format (diagnosis with shuffled options, a yes/no question with fixed options).
The text encoder is the offline all-MiniLM-L6-v2 package; the LLM is the demo's tiny LM.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("bench_training")

CLASSES = ("benign", "low_grade", "high_grade")
NAMES = ["Benign glandular tissue", "Low-grade carcinoma", "High-grade carcinoma"]
REPORTS = {
    "benign": "Diagnosis: benign glandular tissue. Glands are lined by an orderly single layer "
    "of nuclei. Lesional nuclei are small and round with fine chromatin.",
    "low_grade": "Diagnosis: low-grade carcinoma. Glands are crowded with nuclear stratification. "
    "Lesional nuclei are medium-sized and oval with slightly coarse chromatin.",
    "high_grade": "Diagnosis: high-grade carcinoma. Tumour cells grow in solid sheets. Lesional "
    "nuclei are large and pleomorphic with coarse chromatin and prominent nucleoli.",
}


def cache_arrays(label: int, rng: np.random.Generator, d_p=32, d_c=16, s=4, k=4, regions=4):
    proto = np.random.default_rng(1000 + label)
    p_proto, c_proto = proto.normal(size=d_p), proto.normal(size=d_c)
    n = regions * s * s
    counts = rng.integers(0, 6, size=regions * k)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    c = int(offsets[-1])
    return {
        "patch_emb": (p_proto + rng.normal(size=(n, d_p))).astype(np.float16),
        "patch_coords": np.zeros((n, 2), np.int64),
        "patch_region": np.repeat(np.arange(regions), s * s).astype(np.int64),
        "region_grid": np.arange(n).reshape(regions, s, s).astype(np.int64),
        "region_pos": np.stack([np.zeros(regions), np.arange(regions)], 1).astype(np.int64),
        "selected": np.stack([r * s * s + rng.permutation(s * s)[:k] for r in range(regions)]),
        "cell_emb": (c_proto + rng.normal(size=(c, d_c))).astype(np.float16),
        "cell_pos": rng.uniform(size=(c, 2)).astype(np.float32),
        "cell_offsets": offsets,
    }


def closed(sid, qid, question, options, correct, task):
    lines = "\n".join(f"{'ABC'[i]}) {o}" for i, o in enumerate(options))
    return {
        "id": f"{sid}_q{qid}",
        "slide_id": sid,
        "conversations": [
            {
                "from": "human",
                "value": f"<image>\n{question}\n{lines}\nAnswer with the option's letter.",
            },
            {"from": "gpt", "value": f"{'ABC'[correct]}) {options[correct]}."},
        ],
        "question_type": "closed",
        "task": task,
        "options": options,
        "answer": "ABC"[correct],
    }


def make_cohort(root: Path, n: int, seed: int = 0) -> dict[str, Path]:
    from hwsi_model.data.stores.cache import write_cache

    rng = np.random.default_rng(seed)
    rows, reports, vqa = [], [], {"train": [], "val": [], "test": []}
    for i in range(n):
        label = i % 3
        split = "test" if i % 5 == 4 else "val" if i % 10 == 3 else "train"
        sid = f"bench_{i:03d}"
        path = root / "cache" / f"{sid}.zarr"
        write_cache(path, cache_arrays(label, rng), {"slide_id": sid})
        rows.append({"slide_id": sid, "cache": str(path), "split": split, "label": CLASSES[label]})
        reports.append(
            {"slide_id": sid, "label": CLASSES[label], "report": REPORTS[CLASSES[label]]}
        )
        order = [int(j) for j in rng.permutation(3)]
        options = [NAMES[j] for j in order]
        vqa[split].append(
            closed(
                sid,
                0,
                "What is the most likely diagnosis?",
                options,
                order.index(label),
                "diagnosis",
            )
        )
        vqa[split].append(
            closed(sid, 1, "Is this carcinoma?", ["Yes", "No"], 1 if label == 0 else 0, "yes/no")
        )
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
    (root / "vqa").mkdir(exist_ok=True)
    for split, items in vqa.items():
        (root / "vqa" / f"{split}.json").write_text(json.dumps(items))
    return {
        "manifest": root / "manifest.csv",
        "reports": root / "reports.jsonl",
        "vqa": root / "vqa",
    }


def main() -> None:
    from hwsi_model.demo.llm import build_demo_llm, corpus_texts
    from hwsi_model.evaluation.runner import alignment_metrics, evaluate_models
    from hwsi_model.logs import setup_logging
    from hwsi_model.model.checkpoint import load_model_folder
    from hwsi_model.model.configuration import HWSIConfig
    from hwsi_model.training.entry import run_stage
    from hwsi_model.training.launch import text_encoder_folder
    from hwsi_model.training.stage_config import StageConfig

    p = argparse.ArgumentParser()
    p.add_argument("--slides", type=int, default=30)
    p.add_argument("--out", default="benchmarks/out/training")
    p.add_argument("--epochs", type=int, nargs=3, default=[30, 10, 25])
    a = p.parse_args()
    setup_logging()
    logging.getLogger("hwsi_model.training.engine").setLevel(logging.WARNING)
    root = Path(a.out)
    c = make_cohort(root, a.slides)
    corpus = [c["reports"], c["vqa"] / "train.json"]
    llm = build_demo_llm(root / "tiny_llm", corpus_texts(corpus), hidden=64, layers=2)
    model_cfg = HWSIConfig.from_dict(
        {
            "visual": {
                "ccaf": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                "region": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                "slide": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                "projector": {"align_dim": 32},
            },
            "max_visual_tokens": 16,
            "text_encoder_path": text_encoder_folder("minilm"),
        }
    )
    e1, e2, e3 = a.epochs
    common = {"micro_batch_size": 4, "checkpoint_every": 1000, "warmup_steps": 5}
    vqa = [c["vqa"] / "train.json", c["vqa"] / "val.json"]
    summary = {}
    s1 = StageConfig(stage=1, epochs=e1, lr=1e-3, **common)
    s2 = StageConfig(stage=2, epochs=e2, lr=2e-3, **common)
    s3 = StageConfig(stage=3, epochs=e3, lr=1e-3, llm_tuning="full", **common)
    runs = [
        (s1, {"model_config": model_cfg}),
        (s2, {"init": root / "s1/model", "llm_path": str(llm)}),
        (s3, {"init": root / "s2/model", "instructions": vqa}),
    ]
    for cfg, kw in runs:
        t = time.perf_counter()
        r = run_stage(
            cfg, c["manifest"], root / f"s{cfg.stage}", reports=c["reports"], progress=False, **kw
        )
        summary[f"stage{cfg.stage}"] = {
            "steps": r.steps,
            "seconds": round(time.perf_counter() - t, 1),
            "samples_per_s": round(r.samples_per_s, 1),
            "loss_first_last": [round(r.first_loss, 3), round(r.last_loss, 3)],
            "val_first_last": [round(v, 3) for v in r.val_losses[:1] + r.val_losses[-1:]],
        }
    s1_model = load_model_folder(root / "s1/model", load_llm=False)
    summary["eval_stage1"] = alignment_metrics(s1_model, c["manifest"], "test", c["reports"])[
        "retrieval"
    ]
    run = evaluate_models(
        {"stage3": root / "s3/model"}, c["manifest"], [c["vqa"] / "test.json"], root / "eval"
    )
    summary["eval_stage3"] = {
        fam: {"accuracy": r["metrics"].get("accuracy"), "n": r["n"], "chance": r["chance"]}
        for fam, r in run["families"]["stage3"].items()
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
