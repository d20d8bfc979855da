"""Patch selection on clustered toy embeddings: diversity, relevance order, padding, no leakage."""

from __future__ import annotations

import inspect
import json
from itertools import combinations

import numpy as np
import pytest
import torch

from hwsi_model.selection import (
    SelectionConfig,
    select_patches,
    selection_inputs,
    selection_rule,
)

D = 16


def clusters(sizes: list[int], seed: int = 0, noise: float = 0.05):
    """Rows around random unit centres -> (emb [N, D] float32, labels [N], centres [K, D])."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), D))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    emb = centres[labels] + noise * rng.standard_normal((len(labels), D))
    perm = rng.permutation(len(labels))  # clusters interleaved within the region
    return emb[perm].astype(np.float32), labels[perm], centres.astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def min_pairwise_distance(emb: np.ndarray, rows: np.ndarray) -> float:
    e = unit(emb[rows])
    return float(min(1 - e[i] @ e[j] for i, j in combinations(range(len(rows)), 2)))


def test_candidates_are_more_diverse_than_random_subsets() -> None:
    emb, labels, _ = clusters([30, 10, 8, 5, 4, 3, 2, 2])
    offsets = np.array([0, len(emb)])
    sel = select_patches(emb, offsets, SelectionConfig(n_candidates=8, top_k=8))[0]
    assert (sel >= 0).all() and len(set(sel)) == 8
    assert set(labels[sel]) == set(range(8))  # one patch from every cluster, even the tiny ones
    rng = np.random.default_rng(1)
    random_min = [
        min_pairwise_distance(emb, rng.choice(len(emb), 8, replace=False)) for _ in range(200)
    ]
    assert min_pairwise_distance(emb, sel) > np.percentile(random_min, 99)


def test_farthest_point_starts_at_the_region_mean_and_spreads_over_clusters() -> None:
    emb, labels, _ = clusters([20, 20, 20, 20], seed=2)
    offsets = np.array([0, len(emb)])
    first = select_patches(emb, offsets, SelectionConfig(n_candidates=1, top_k=1))[0, 0]
    e = unit(emb)
    assert first == int(np.argmax(e @ unit(e.mean(axis=0))))
    four = select_patches(emb, offsets, SelectionConfig(n_candidates=4, top_k=4))[0]
    assert sorted(labels[four]) == [0, 1, 2, 3]


def test_top_k_is_ordered_by_relevance_to_the_query() -> None:
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((12, D)).astype(np.float32)
    q = rng.standard_normal(D).astype(np.float32)
    cfg = SelectionConfig(n_candidates=12, top_k=5, query="question")  # all rows are candidates
    sel = select_patches(emb, np.array([0, 12]), cfg, query=q)[0]
    cos = unit(emb) @ unit(q)
    assert list(sel) == list(np.argsort(-cos)[:5])
    assert (np.diff(cos[sel]) <= 0).all()


def test_small_regions_are_padded_and_never_borrow_rows() -> None:
    emb, _, _ = clusters([12, 12], seed=4)
    offsets = np.array([0, 3, 3, 23, 24])  # sizes 3, 0, 20, 1
    out = select_patches(emb, offsets, SelectionConfig(n_candidates=8, top_k=4))
    assert out.shape == (4, 4) and out.dtype == np.int64
    assert sorted(out[0, :3]) == [0, 1, 2] and out[0, 3] == -1
    assert (out[1] == -1).all()
    assert ((out[2] >= 3) & (out[2] < 23)).all() and len(set(out[2])) == 4
    assert out[3, 0] == 23 and (out[3, 1:] == -1).all()


def test_selection_is_deterministic_and_accepts_float16_and_torch() -> None:
    emb, _, _ = clusters([40, 30, 20, 10] * 3, seed=5)
    offsets = np.array([0, 100, 256, 300])
    cfg = SelectionConfig(n_candidates=32, top_k=16)
    a = select_patches(emb, offsets, cfg)
    assert np.array_equal(a, select_patches(emb.copy(), offsets.copy(), cfg))
    half = emb.astype(np.float16)
    h = select_patches(half, offsets, cfg)
    assert np.array_equal(h, select_patches(half.astype(np.float32), offsets, cfg))
    assert np.array_equal(h, select_patches(torch.from_numpy(half), offsets, cfg))
    for r in range(3):  # fp16 rounding may reorder near-ties, not move patches across regions
        assert ((h[r] >= offsets[r]) & (h[r] < offsets[r + 1])).all()


def test_selection_cannot_see_the_report() -> None:
    emb, _, _ = clusters([20, 20, 20], seed=6)
    record = {
        "slide_id": "TCGA-XX-0001",
        "emb": emb,
        "region_offsets": np.array([0, 25, 60]),
        "report": "Invasive ductal carcinoma, grade 3, with extensive necrosis.",
        "qa": [{"question": "What is the grade?", "answer": "3"}],
    }
    no_text = {k: v for k, v in record.items() if k not in ("report", "qa")}
    other = {**record, "report": "Benign breast tissue.", "qa": []}
    cfg = SelectionConfig(n_candidates=16, top_k=8)
    allowed = selection_inputs(record)
    assert set(allowed) == {"emb", "region_offsets"}
    results = [select_patches(**selection_inputs(r), config=cfg) for r in (record, no_text, other)]
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    # Structurally: the function takes no text at all.
    assert list(inspect.signature(select_patches).parameters) == [
        "emb",
        "region_offsets",
        "config",
        "query",
    ]
    with pytest.raises(TypeError):
        select_patches(**allowed, config=cfg, report=record["report"])  # type: ignore[call-arg]


def test_prompt_mode_picks_the_patches_nearest_the_prompts() -> None:
    emb, labels, centres = clusters([5, 5, 5, 5, 5, 5], seed=7)
    prompts = centres[[2, 4]] + 0.01  # the bank "describes" clusters 2 and 4
    cfg = SelectionConfig(n_candidates=6, top_k=2, query="prompts")
    sel = select_patches(emb, np.array([0, len(emb)]), cfg, query=prompts)[0]
    assert sorted(labels[sel]) == [2, 4]
    other = select_patches(emb, np.array([0, len(emb)]), cfg, query=centres[[0, 5]])[0]
    assert sorted(labels[other]) == [0, 5]  # another bank, other patches: the query decides


def test_query_arguments_are_checked() -> None:
    emb, _, _ = clusters([4, 4])
    offsets = np.array([0, 8])
    with pytest.raises(ValueError, match="takes no query"):
        select_patches(emb, offsets, SelectionConfig(), query=np.ones((1, D)))
    with pytest.raises(ValueError, match="needs query vectors"):
        select_patches(emb, offsets, SelectionConfig(query="prompts"))
    with pytest.raises(ValueError, match="patch embedding space"):
        select_patches(emb, offsets, SelectionConfig(query="question"), query=np.ones((1, 7)))
    with pytest.raises(ValueError, match="region_offsets"):
        select_patches(emb, np.array([0, 9]), SelectionConfig())
    with pytest.raises(ValueError, match="top_k"):
        SelectionConfig(n_candidates=8, top_k=16)
    with pytest.raises(ValueError, match="query must be one of"):
        SelectionConfig(query="report")


def test_selection_rule_is_json_and_records_the_query_source() -> None:
    rule = selection_rule(SelectionConfig(query="prompts"), "prompts:default@abc123")
    assert json.loads(json.dumps(rule)) == rule
    assert rule["n_candidates"] == 32 and rule["top_k"] == 16 and rule["query"] == "prompts"
    assert rule["query_source"] == "prompts:default@abc123"
    assert rule["uses_slide_text"] is False
