"""The extraction engine: slide -> patch embeddings in Zarr, streamed.

A DataLoader with several workers reads patches straight from the slide (no tile images on
disk; each worker has its own reader) while the main process runs the encoder: reading and
compute overlap. uint8 patches travel to the device (pinned memory on GPU), are resized and
normalised there, encoded under ``inference_mode`` (bf16/fp16 autocast on GPU), and the
float16 embeddings are written to Zarr as they come, one chunk at a time. A batch's result is
copied back only after the next batch is queued, so the device never waits for that copy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from hwsi_model.data.stores.tiles import TileGrid
from hwsi_model.devices import resolve_device
from hwsi_model.embed.dataset import SlidePatchDataset
from hwsi_model.embed.params import ExtractParams

log = logging.getLogger(__name__)


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` on ``device`` (fp32 on CPU unless asked otherwise)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process computes


def encode_batches(
    dataset: SlidePatchDataset,
    encoder: torch.nn.Module,
    params: ExtractParams,
    with_tokens: bool = False,
    progress: bool = True,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Yield ``(start, end, emb [n, D] float16, tokens [n, h, w, Dt] float16 | None)`` in order."""
    device = resolve_device(params.device)
    encoder = encoder.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=params.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if params.num_workers else None,
        worker_init_fn=_worker_init if params.num_workers else None,
    )
    n_total = sum(e - s for s, e in dataset.items)
    bar = tqdm(total=n_total, unit="patch", desc=f"embed {dataset.slide_id}", disable=not progress)

    def to_host(start, end, emb, tok):
        # Blocks until this batch is computed; the next one is already queued on the device.
        tok = None if tok is None else tok.float().cpu().numpy().astype(np.float16)
        bar.update(end - start)
        return int(start), int(end), emb.float().cpu().numpy().astype(np.float16), tok

    pending = None  # the previous batch, still on the device
    with torch.inference_mode(), autocast(device, params.precision):
        for start, end, x in loader:
            x = encoder.preprocess(x.to(device, non_blocking=True))
            if with_tokens:
                emb, tok = encoder.forward_with_tokens(x)
            else:
                emb, tok = encoder(x), None
            if pending is not None:
                yield to_host(*pending)
            pending = (start, end, emb, tok)
        if pending is not None:
            yield to_host(*pending)
    bar.close()


def embed_slide(
    slide_path: str,
    slide_id: str,
    tiles: TileGrid,
    encoder: torch.nn.Module,
    write,  # callable(start, rows) -- e.g. RowWriter.write
    params: ExtractParams | None = None,
    mpp_override: float | None = None,
    progress: bool = True,
) -> None:
    """Embed every patch of ``tiles`` and pass the rows, in order, to ``write``."""
    params = params or ExtractParams()
    ds = SlidePatchDataset(slide_path, slide_id, tiles, mpp_override, params.rows_per_item)
    for start, _, emb, _ in encode_batches(ds, encoder, params, progress=progress):
        write(start, emb)
