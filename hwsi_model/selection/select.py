"""Diagnostically relevant patches per region: max-min diverse candidates, then top-k by relevance.

Per region (rows ``offsets[r]:offsets[r+1]`` of the slide's patch embeddings):

1. candidates: greedy farthest-point sampling on cosine distance, ``n_candidates`` patches,
   starting from the patch closest to the region's mean embedding (deterministic);
2. relevance of each candidate to the query vectors (max cosine over them);
3. the ``top_k`` most relevant candidates, best first; ties go to the lower row index.

The inputs are embeddings, offsets and query vectors only. No report, caption or answer of the
slide can reach the selection, so the same rule runs in training and at inference without label
leakage (design brief, section 2.3). Regions are processed in padded chunks with batched matrix
products (Gram matrices), so a whole slide takes a fraction of a second to a few seconds on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from hwsi_model.selection.settings import SelectionConfig

if TYPE_CHECKING:
    import torch

SELECTION_INPUTS = ("emb", "region_offsets")
CHUNK_FLOATS = 1 << 23  # ~32 MB of float32 per chunk of regions (embeddings + Gram matrices)


def _as_float32(a: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor (torch is not imported for numpy inputs)
        a = a.detach().float().cpu().numpy()
    out = np.asarray(a, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} holds non-finite values")
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _check_offsets(offsets: np.ndarray, n_rows: int) -> np.ndarray:
    offs = np.asarray(offsets)
    if offs.ndim != 1 or len(offs) < 1 or not np.issubdtype(offs.dtype, np.integer):
        raise ValueError("region_offsets must be a 1-D integer array [R+1]")
    offs = offs.astype(np.int64)
    if offs[0] < 0 or offs[-1] > n_rows or (np.diff(offs) < 0).any():
        raise ValueError(f"region_offsets must be non-decreasing within [0, {n_rows}]")
    return offs


def query_vectors(
    emb: np.ndarray, offsets: np.ndarray, config: SelectionConfig, query: Any | None
) -> np.ndarray:
    """Unit query vectors ``[Q, D]`` for ``config.query`` (``emb`` already unit rows)."""
    if config.query == "slide_mean":
        if query is not None:
            raise ValueError("query='slide_mean' takes no query vectors (pass query=None)")
        rows = emb[offsets[0] : offsets[-1]]
        mean = rows.mean(axis=0, keepdims=True) if len(rows) else np.zeros((1, emb.shape[1]))
        return _normalise(mean.astype(np.float32))
    if query is None:
        raise ValueError(f"query={config.query!r} needs query vectors [Q, D]")
    q = _as_float32(query, "query")
    q = q[None] if q.ndim == 1 else q
    if q.ndim != 2 or len(q) == 0 or q.shape[1] != emb.shape[1]:
        raise ValueError(
            f"query must be [Q, {emb.shape[1]}] in the patch embedding space, got {q.shape}"
        )
    return _normalise(q)


def _select_chunk(
    emb: np.ndarray, offsets: np.ndarray, queries: np.ndarray, config: SelectionConfig
) -> np.ndarray:
    """Selection for the regions of one chunk -> ``[C, top_k]`` global rows (-1 padded)."""
    sizes = np.diff(offsets)
    c, m = len(sizes), int(sizes.max())
    rows_c = np.arange(c)
    local = np.arange(m)
    valid = local[None] < sizes[:, None]  # [C, M]
    rows = np.where(valid, offsets[:-1, None] + local[None], -1)  # global row, -1 = padding
    x = np.where(valid[..., None], emb[np.maximum(rows, 0)], 0.0).astype(np.float32)  # [C, M, D]

    # 1. max-min diverse candidates (greedy farthest point on cosine distance).
    gram = np.matmul(x, x.transpose(0, 2, 1))  # [C, M, M] cosine similarities
    mean = _normalise(x.sum(axis=1) / np.maximum(sizes, 1)[:, None])  # [C, D]
    start = np.matmul(x, mean[..., None])[..., 0]  # [C, M]
    start[~valid] = -np.inf
    n_cand = min(config.n_candidates, m)
    cand = np.full((c, n_cand), -1, np.int64)  # local positions
    min_dist = np.where(valid, np.inf, -np.inf)
    pick = start.argmax(axis=1)
    for t in range(n_cand):
        has = t < sizes
        cand[:, t] = np.where(has, pick, -1)
        min_dist = np.minimum(min_dist, 1.0 - gram[rows_c, :, pick])
        min_dist[rows_c[has], pick[has]] = -np.inf  # picked
        min_dist[~valid] = -np.inf
        pick = min_dist.argmax(axis=1)

    # 2. relevance of the candidates to the query (max cosine over the query vectors).
    relevance = np.matmul(x, queries.T).max(axis=-1)  # [C, M]
    ok = cand >= 0
    safe = np.maximum(cand, 0)
    score = np.where(ok, np.take_along_axis(relevance, safe, axis=1), -np.inf)
    global_rows = np.where(ok, np.take_along_axis(rows, safe, axis=1), -1)

    # 3. top-k, best first, ties to the lower row (np.lexsort: last key is the primary one).
    order = np.lexsort((global_rows, -score), axis=-1)
    ranked = np.take_along_axis(global_rows, order, axis=1)[:, : config.top_k]
    out = np.full((c, config.top_k), -1, np.int64)
    out[:, : ranked.shape[1]] = ranked
    return out


def select_patches(
    emb: np.ndarray | torch.Tensor,
    region_offsets: np.ndarray,
    config: SelectionConfig,
    query: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """The diagnostically relevant patches of every region of one slide.

    Args:
        emb: ``[N, D]`` patch embeddings (float16/32, numpy or torch), rows grouped by region.
        region_offsets: ``[R+1]`` int: the patches of region ``r`` are rows
            ``offsets[r]:offsets[r+1]``.
        config: candidate-set size, ``top_k`` and query mode.
        query: ``[Q, D]`` query vectors in the patch embedding space for ``"prompts"`` (the
            embedded prompt bank) or ``"question"`` (``[D]`` accepted); ``None`` for
            ``"slide_mean"``.

    Returns:
        ``[R, top_k]`` int64 global row indices into ``emb``, best first within a region; ``-1``
        pads regions with fewer than ``top_k`` patches. Never a row of another region.
    """
    x = _as_float32(emb, "emb")
    if x.ndim != 2:
        raise ValueError(f"emb must be [N, D], got {x.shape}")
    x = _normalise(x)
    offsets = _check_offsets(region_offsets, len(x))
    n_regions = len(offsets) - 1
    out = np.full((n_regions, config.top_k), -1, np.int64)
    queries = query_vectors(x, offsets, config, query)
    sizes = np.diff(offsets)
    if n_regions == 0 or sizes.max() == 0:
        return out
    m = int(sizes.max())
    chunk = max(1, CHUNK_FLOATS // (m * (m + x.shape[1] + len(queries))))
    for r0 in range(0, n_regions, chunk):
        r1 = min(n_regions, r0 + chunk)
        if sizes[r0:r1].max() > 0:
            out[r0:r1] = _select_chunk(x, offsets[r0 : r1 + 1], queries, config)
    return out


def selection_inputs(record: Mapping[str, Any]) -> dict[str, Any]:
    """The only fields of a slide record that selection may read: ``emb`` and ``region_offsets``.

    Use it to call :func:`select_patches` from a cohort/cache record: whatever else the record
    holds (report, caption, question-answer pairs, labels) is dropped here.
    """
    missing = [k for k in SELECTION_INPUTS if k not in record]
    if missing:
        raise KeyError(f"slide record lacks {missing} (selection needs {SELECTION_INPUTS})")
    return {k: record[k] for k in SELECTION_INPUTS}
