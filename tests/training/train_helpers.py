"""Helpers of the training tests: a tiny synthetic cohort (caches written with ``write_cache``,
manifest, reports, demo-format VQA), and builders of a tiny causal LM and text encoder saved to a
local folder (never downloaded). Slides of a class share patch/cell prototypes, so the class is
learnable from the tensors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import tiny_models

from hwsi_model.data.stores.cache import write_cache
from hwsi_model.model.configuration import (
    CCAFConfig,
    HWSIConfig,
    LossConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    SlideEncoderConfig,
    VisualConfig,
)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

D_P, D_C, S, K = 16, 12, 2, 2
CLASSES = ("benign", "low_grade", "high_grade")
REPORTS = {
    "benign": "Benign glands in stroma. Small round nuclei with fine chromatin.",
    "low_grade": "The slide shows carcinoma. Oval nuclei with slightly coarse chromatin.",
    "high_grade": "High-grade carcinoma with necrosis. Large pleomorphic nuclei and mitoses.",
}
OPTIONS = ["Benign glandular tissue", "Low-grade carcinoma", "High-grade carcinoma"]
WORDS = str.split(
    "the a of and is are with in slide shows tissue tumor carcinoma benign glands nuclei "
    "large small round oval pleomorphic dense sparse chromatin coarse fine region patch cell "
    "what diagnosis describe cells how many yes no high low grade mitoses stroma necrosis "
    "present absent there which report findings write concise pathology for this most likely "
    "answer with option's letter glandular high-grade low-grade slightly whole-slide image "
    "A B C ) . , ? : -"
)


def toy_arrays(label: int, seed: int, n_regions: int = 2) -> dict[str, np.ndarray]:
    """A valid cache (``write_cache`` arrays) of a slide of class ``label``."""
    rng = np.random.default_rng(seed)
    proto = np.random.default_rng(100 + label)
    p_proto, c_proto = proto.normal(size=D_P) * 2, proto.normal(size=D_C) * 2
    per_region = S * S
    n = n_regions * per_region
    region = np.repeat(np.arange(n_regions), per_region)
    grid = np.arange(n).reshape(n_regions, S, S).astype(np.int64)
    selected = np.stack([np.arange(r * per_region, r * per_region + K) for r in range(n_regions)])
    counts = rng.integers(1, 4, size=n_regions * K)
    counts[0] = 0  # a selected patch without cells: CCAF's no-cells token
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    c = int(offsets[-1])
    return {
        "patch_emb": (p_proto + 0.5 * rng.normal(size=(n, D_P))).astype(np.float16),
        "patch_coords": np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64),
        "patch_region": region.astype(np.int64),
        "region_grid": grid,
        "region_pos": np.stack([np.zeros(n_regions), np.arange(n_regions)], 1).astype(np.int64),
        "selected": selected.astype(np.int64),
        "cell_emb": (c_proto + 0.5 * rng.normal(size=(c, D_C))).astype(np.float16),
        "cell_pos": rng.uniform(size=(c, 2)).astype(np.float32),
        "cell_offsets": offsets,
    }


def make_cohort(root: Path, n_train: int = 6, n_val: int = 3) -> dict[str, Path]:
    """Caches, ``manifest.csv``, ``reports.jsonl`` and ``vqa/{train,val}.json`` under ``root``."""
    rows, reports, vqa = [], [], {"train": [], "val": []}
    for i in range(n_train + n_val):
        label = i % len(CLASSES)
        split = "train" if i < n_train else "val"
        sid = f"toy_{i:02d}"
        cache = root / "cache" / f"{sid}.zarr"
        write_cache(cache, toy_arrays(label, seed=i), {"slide_id": sid, "patch_dim": D_P})
        rows.append({"slide_id": sid, "cache": str(cache), "split": split, "label": CLASSES[label]})
        reports.append(
            {"slide_id": sid, "label": CLASSES[label], "report": REPORTS[CLASSES[label]]}
        )
        letter = "ABC"[label]
        lines = "\n".join(f"{'ABC'[j]}) {o}" for j, o in enumerate(OPTIONS))
        vqa[split].append(
            {
                "id": f"{sid}_q0",
                "image": f"{sid}.tiff",
                "slide_id": sid,
                "conversations": [
                    {
                        "from": "human",
                        "value": f"<image>\nWhat is the most likely diagnosis?\n{lines}",
                    },
                    {"from": "gpt", "value": f"{letter}) {OPTIONS[label]}."},
                ],
                "question_type": "closed",
                "task": "diagnosis",
                "options": OPTIONS,
                "answer": letter,
            }
        )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "cache", "split", "label"])
        w.writeheader()
        w.writerows(rows)
    (root / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
    (root / "vqa").mkdir(exist_ok=True)
    for split, items in vqa.items():
        (root / "vqa" / f"{split}.json").write_text(json.dumps(items))
    return {
        "manifest": manifest,
        "reports": root / "reports.jsonl",
        "vqa_train": root / "vqa" / "train.json",
        "vqa_val": root / "vqa" / "val.json",
    }


def tiny_model_config(text_encoder: Path) -> HWSIConfig:
    width = 16
    visual = VisualConfig(
        patch_dim=D_P,
        cell_dim=D_C,
        ccaf=CCAFConfig(hidden_size=width, num_layers=1, num_heads=2, position_frequencies=2),
        region=RegionEncoderConfig(hidden_size=width, num_layers=1, num_heads=2, region_size=S),
        slide=SlideEncoderConfig(hidden_size=width, num_layers=1, num_heads=2),
        projector=ProjectorConfig(align_dim=16),
    )
    return HWSIConfig(
        visual=visual, loss=LossConfig(), text_encoder_path=str(text_encoder), max_visual_tokens=8
    )


def build_tiny_llm(path: Path, hidden: int = 32) -> Path:
    """A 1-layer Qwen2-shaped causal LM over the test words."""
    return tiny_models.build_tiny_llm(path, WORDS, hidden, layers=1)


def build_tiny_text_encoder(path: Path, hidden: int = 16) -> Path:
    """A 2-layer BERT with a word-piece vocabulary of the test words."""
    return tiny_models.build_tiny_text_encoder(path, [w.lower() for w in WORDS], hidden, layers=2)
