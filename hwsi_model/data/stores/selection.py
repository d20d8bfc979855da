"""The per-slide patch selection, ``selection/{slide_id}.csv``: ``region,rank,patch_index``.

One row per selected patch: its region, its rank by relevance inside the region (0 = most
relevant) and its row in the tiles store. As an array it is ``[R, K] int64``, -1 = padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hwsi_model.atomic import atomic_output


def write_selection(path: str | Path, selected: np.ndarray) -> None:
    """Write ``selected [R, K] int64`` (-1 = padding) as CSV, atomically."""
    region, rank = np.nonzero(selected >= 0)
    df = pd.DataFrame({"region": region, "rank": rank, "patch_index": selected[region, rank]})
    with atomic_output(path) as tmp:
        df.to_csv(tmp, index=False)


def read_selection(path: str | Path, n_regions: int, top_k: int) -> np.ndarray:
    """``[R, K] int64`` from a selection CSV (-1 where a region has fewer patches)."""
    # Explicit dtypes: a slide without tissue has a header-only CSV (read as float/object).
    df = pd.read_csv(path, dtype={"region": np.int64, "rank": np.int64, "patch_index": np.int64})
    sel = np.full((n_regions, top_k), -1, np.int64)
    sel[df["region"].to_numpy(), df["rank"].to_numpy()] = df["patch_index"].to_numpy()
    return sel
