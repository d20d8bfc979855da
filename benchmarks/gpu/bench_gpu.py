"""GPU benchmark of hwsi in one process: patch extraction, a cohort's GPU busy fraction and the
stage-3 training step. Figures go to ``gpu_results.json`` and ``gpu_results.md`` (a section for
benchmarks/RESULTS.md) in ``--out``; progress to ``gpu_results.log`` there too.

1. extract: a synthetic JPEG-tiled pyramidal TIFF at 0.5 um/px and the same tissue at 0.25 um/px
   (levels 1, 4, 16, 64 as an Aperio scan: the 40x patches are read from level 0 and halved by
   the project's resizing path), through the project's own path: ``tissue_step`` +
   ``tiling_step`` for the grid, ``embed_slide`` (SlidePatchDataset + DataLoader +
   ``encode_batches``) with a random ViT-L/16-shaped Hugging Face ViT (``load_encoder("hf")``)
   under bf16 autocast. (a) end to end, (b) the same encoder on uint8 patches already on the
   device (the ceiling), (c) the loader alone (``encode_batches`` with a no-op encoder).
2. cohort: N slides through ``embed_patches_step`` (the workflow's patch-embedding step, Zarr
   output) with one loaded encoder, as ``extract_batch`` runs them; GPU busy fraction over the
   embedding wall time by NVML sampling and by CUDA-event-timed encoder work. Patch embedding
   only: StarDist (TensorFlow) is not on the GPU machine, and cell embeddings need its nuclei.
3. stage3: ``HWSIModel`` configured for stage 3 (LLM projectors + the LLM, full or LoRA) with a
   Qwen2-0.5B-shaped random decoder in bf16 and gradient checkpointing, visual tokens spliced
   among the text embeddings, against the same decoder's LLM-only step of the same token count.

``--rehearse`` runs every part on the CPU with tiny shapes (CUDA-only calls skipped).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("bench_gpu")
T_START = time.perf_counter()
TILE = 256
#: Dense bf16 tensor-core peak, FLOP/s, by GPU name (first match wins).
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


@dataclass(frozen=True)
class Shapes:
    """Sizes of one run (GPU or rehearsal); px are level-0 pixels, times in s."""

    slide_px: int  # side of the 0.5 um/px slide (the 40x one has twice as many px)
    cohort_px: int
    cohort_slides: int
    region_size: int  # patches per region side
    workers: int
    rows_per_item: int  # patches per loader item = the encoder's batch
    ceiling_patches: int  # patches encoded to time the ceiling
    ref_batch: int  # batch of a second ceiling figure (DESIGN.md: 512)
    vit: dict = field(default_factory=dict)  # ViTConfig widths
    llm: dict = field(default_factory=dict)  # Qwen2Config widths
    visual_width: int | None = None  # None: VisualConfig defaults (the paper's 768)
    batch: int = 8
    seq: int = 2048
    warmup: int = 2
    steps: int = 8
    regions: int = 64  # per slide in the stage-3 batch
    top_k: int = 16
    cells: int = 32  # mean cells per selected patch
    visual_tokens: int = 1024  # HWSIConfig.max_visual_tokens
    answer_tokens: int = 512  # supervised tokens per sequence
    budget_s: float = 420.0


GPU = Shapes(
    slide_px=32768,
    cohort_px=32768,
    cohort_slides=20,
    region_size=16,
    workers=14,
    rows_per_item=256,
    ceiling_patches=16384,
    ref_batch=512,
    vit=dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
    llm=dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
    ),
)
REHEARSE = Shapes(
    slide_px=4096,
    cohort_px=2048,
    cohort_slides=3,
    region_size=4,
    workers=2,
    rows_per_item=16,
    ceiling_patches=32,
    ref_batch=32,
    vit=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    llm=dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
    ),
    visual_width=32,
    batch=2,
    seq=192,
    warmup=1,
    steps=2,
    regions=4,
    top_k=2,
    cells=4,
    visual_tokens=48,
    answer_tokens=32,
    budget_s=280.0,
)


def elapsed() -> float:
    """Seconds since the module was imported."""
    return time.perf_counter() - T_START


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- synthetic slides -------------------------------------------------------------------------


def texture(rng: np.random.Generator, side: int = 1024) -> np.ndarray:
    """H&E-like texture at 0.5 um/px (pink stroma, purple nuclei, grain): ``[side, side, 3]``."""
    from scipy import ndimage as ndi

    smooth = np.kron(ndi.gaussian_filter(rng.normal(size=(side // 16,) * 2), 2), np.ones((16, 16)))
    base = np.array([236, 168, 204], np.float32) + 18 * smooth[..., None] * np.array([0.5, 1, 0.6])
    seeds = np.zeros((side, side), bool)
    n = side * side // 700
    seeds[rng.integers(0, side, n), rng.integers(0, side, n)] = True
    nuclei = ndi.distance_transform_edt(~seeds) < 7
    img = np.where(nuclei[..., None], np.array([112, 72, 160], np.float32), base)
    return np.clip(img + rng.normal(0, 7, img.shape), 0, 255).astype(np.uint8)


def encoded_tiles(tiles: list[np.ndarray], tmp: Path) -> list[bytes]:
    """JPEG tiles exactly as tifffile writes them for the pyramid (written once, read back)."""
    import tifffile

    tifffile.imwrite(tmp, np.concatenate(tiles, axis=1), **tiff_args(), metadata=None)
    with tifffile.TiffFile(tmp) as tif:
        page, fh = tif.pages[0], tif.filehandle
        out = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(offset)
            out.append(fh.read(count))
    tmp.unlink()
    return out


def tiff_args() -> dict[str, Any]:
    return dict(
        photometric="rgb", tile=(TILE, TILE), compression="jpeg", compressionargs={"level": 90}
    )


def tissue_tiles(n: int, seed: int, fraction: float = 0.8) -> np.ndarray:
    """``[n, n] bool``: which level-0 tiles hold tissue (one smooth blob, ``fraction`` of them)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.normal(size=(n, n)), sigma=max(1.0, n / 10))
    yy, xx = np.mgrid[0:n, 0:n] / max(n - 1, 1) - 0.5
    f = f / (f.std() + 1e-9) - 6 * (xx**2 + yy**2)
    return f >= np.quantile(f, 1 - fraction)


def write_slide(path: Path, mask: np.ndarray, mpp: float, seed: int, threads: int) -> dict:
    """Write a pyramidal JPEG-tiled TIFF (OpenSlide ``generic-tiff``) whose level-0 tile
    ``(ty, tx)`` is tissue where ``mask[ty, tx]``; levels at downsamples 1, 4, 16, 64.

    Level 0 is written from pre-encoded tiles (16 tissue tiles and one of glass); the lower
    levels are rendered consistently and encoded by tifffile. Returns file facts (MB, KB/tile).
    """
    import tifffile

    rng = np.random.default_rng(seed)
    tex = texture(rng)
    pool = [
        tex[y : y + TILE, x : x + TILE] for y in range(0, 1024, TILE) for x in range(0, 1024, TILE)
    ]
    glass = np.clip(242 + rng.normal(0, 1.5, (TILE, TILE, 3)), 0, 255).astype(np.uint8)
    enc = encoded_tiles([*pool, glass], path.with_suffix(".pool.tif"))
    n = mask.shape[0]
    side = n * TILE
    pick = (np.arange(n)[:, None] * 7 + np.arange(n)[None, :] * 3 + seed) % len(pool)
    codes = np.where(mask, pick, len(pool)).ravel()
    downsamples = [d for d in (1, 4, 16, 64) if side // d >= 64]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        px_cm = 1e4 / mpp
        common = dict(resolutionunit="CENTIMETER", metadata=None)
        tif.write(
            (enc[c] for c in codes),
            shape=(side, side, 3),
            dtype="uint8",
            subfiletype=0,
            resolution=(px_cm, px_cm),
            **tiff_args(),
            **common,
        )
        for d in downsamples[1:]:
            k = TILE // d
            tex_d = tex.reshape(1024 // d, d, 1024 // d, d, 3).mean((1, 3)).astype(np.uint8)
            reps = math.ceil(side // d / tex_d.shape[0])
            level = np.tile(tex_d, (reps, reps, 1))[: side // d, : side // d]
            tissue = np.repeat(np.repeat(mask, k, 0), k, 1)
            level = np.where(tissue[..., None], level, np.uint8(242))
            tif.write(
                level,
                subfiletype=1,
                resolution=(px_cm / d, px_cm / d),
                maxworkers=threads,
                **tiff_args(),
                **common,
            )
    kb = [len(enc[c]) / 1024 for c in range(len(enc))]
    return {
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "jpeg_kb_tissue_tile": round(float(np.mean(kb[:-1])), 1),
        "downsamples": downsamples,
    }


def make_and_prepare(
    folder: str,
    slide_id: str,
    tiles_per_side: int,
    mpp: float,
    seed: int,
    region_size: int,
    threads: int,
) -> dict:
    """Write one slide and run the workflow's ``prepare_slide`` steps on it (tissue, grid)."""
    from hwsi_model.tiling.steps import tiling_step, tissue_step
    from hwsi_model.tiling.tissue import TissueParams

    d = Path(folder) / slide_id
    d.mkdir(parents=True, exist_ok=True)
    mask = tissue_tiles(tiles_per_side, seed)
    if mpp < 0.375:  # the same tissue scanned at 40x: every 0.5 um/px tile becomes 2 x 2
        mask = np.kron(mask, np.ones((2, 2), bool))
    t0 = time.perf_counter()
    facts = write_slide(d / f"{slide_id}.tiff", mask, mpp, seed, threads)
    t1 = time.perf_counter()
    tissue_step(d / f"{slide_id}.tiff", slide_id, d / "tissue", TissueParams())
    tiles = tiling_step(
        slide_id, d / "tissue", d / "tiles.zarr", d / "tiling_qc.png", region_size=region_size
    )
    return {
        "slide_id": slide_id,
        "path": str(d / f"{slide_id}.tiff"),
        "tiles_store": str(d / "tiles.zarr"),
        "level0_px": int(mask.shape[0] * TILE),
        "mpp": mpp,
        "n_patches": len(tiles),
        "n_regions": int(tiles.n_regions),
        "patch_size_level0": int(tiles.geometry.patch_size_level0),
        "write_s": round(t1 - t0, 2),
        "prepare_s": round(time.perf_counter() - t1, 2),
        **facts,
    }


def make_slides(jobs: list[tuple], processes: int, threads: int) -> list[dict]:
    """:func:`make_and_prepare` for each job ``(folder, id, tiles, mpp, seed, region_size)``."""
    ctx = mp.get_context("fork")
    with cf.ProcessPoolExecutor(max_workers=max(1, processes), mp_context=ctx) as pool:
        futures = [pool.submit(make_and_prepare, *job, threads) for job in jobs]
        return [f.result() for f in futures]


# -- instruments --------------------------------------------------------------------------------


class EncoderClock:
    """Times each batch's encoder work (``preprocess`` start to ``forward`` end) on the device:
    CUDA events on a GPU (GPU seconds, no synchronisation in the loop), wall clock on CPU."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: list[tuple[Any, Any]] = []
        self._start: Any = None
        pre, fwd = encoder.preprocess, encoder.forward

        def preprocess(x: torch.Tensor) -> torch.Tensor:
            self._start = self._mark()
            return pre(x)

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = fwd(x)
            if self._start is not None:
                self.spans.append((self._start, self._mark()))
                self._start = None
            return out

        encoder.preprocess = preprocess
        encoder.forward = forward

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def reset(self) -> None:
        self.spans.clear()

    def busy_s(self, first: int = 0, last: int | None = None) -> float:
        """Sum of the encoder spans of batches ``first:last``, s (synchronises the device)."""
        spans = self.spans[first:last]
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in spans) / 1e3
        return float(sum(b - a for a, b in spans))


class UtilSampler:
    """NVML GPU utilisation (share of time a kernel ran, over NVML's sample period of 1/6 to 1 s)
    sampled every ``period_s`` in a thread while in the ``with`` block (the device is taken to be
    NVML's device of the same index: one GPU); ``mean()`` is ``None`` off CUDA."""

    def __init__(self, device: torch.device, period_s: float = 0.1) -> None:
        self.device, self.period_s = device, period_s
        self.samples: list[int] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> UtilSampler:
        if self.device.type != "cuda":
            self.error = "not on CUDA"
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            self._read()
        except Exception as exc:  # nvidia-ml-py missing or NVML refused
            self.error = f"{type(exc).__name__}: {exc}"
            return self
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append(self._read())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        """Mean utilisation as a fraction (0..1), or ``None``."""
        return round(float(np.mean(self.samples)) / 100, 3) if self.samples else None


class NullEncoder(torch.nn.Module):
    """Stands in for the encoder: the loader's path (pinned uint8 -> device -> embeddings back to
    the host, one synchronisation per batch) with no compute."""

    embed_dim = 1

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :1].float()


# -- part 1: extraction ---------------------------------------------------------------------------


def build_vit(folder: Path, widths: dict, device: torch.device) -> None:
    """Save a random ViT/16 at 224 px (Hugging Face ``ViTModel``) with ``widths`` to ``folder``."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    with torch.device(device):
        model = ViTModel(ViTConfig(image_size=224, patch_size=16, **widths))
    model.save_pretrained(folder)


def slide_patches(slide: dict, n: int) -> torch.Tensor:
    """The first ``n`` patches of a slide's grid (``[n, 256, 256, 3] uint8``), repeated if short."""
    from hwsi_model.data.stores.tiles import read_tiles
    from hwsi_model.embed.dataset import SlidePatchDataset

    tiles, _ = read_tiles(slide["tiles_store"])
    ds = SlidePatchDataset(slide["path"], slide["slide_id"], tiles, None, n)
    x = ds[0][2]
    return x.repeat(math.ceil(n / len(x)), 1, 1, 1)[:n]


def ceiling(encoder, x: torch.Tensor, n_batches: int, precision: str) -> dict:
    """(b): the encoder (on-device preprocess + forward) on uint8 patches already on the device,
    batches queued without a host synchronisation; patches/s."""
    from hwsi_model.embed.extract import autocast

    device = x.device
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(2):
            encoder(encoder.preprocess(x))
        sync(device)
        t = time.perf_counter()
        for _ in range(n_batches):
            out = encoder(encoder.preprocess(x))
        out.float().cpu()
        dt = time.perf_counter() - t
    return {
        "batch": len(x),
        "patches": n_batches * len(x),
        "patches_per_s": round(n_batches * len(x) / dt, 1),
    }


def embed_timed(slide: dict, encoder, params, clock: EncoderClock | None) -> dict:
    """``embed_slide`` over the slide's grid (rows kept in memory); wall and steady-state rates."""
    from hwsi_model.data.stores.tiles import read_tiles
    from hwsi_model.embed.extract import embed_slide

    tiles, _ = read_tiles(slide["tiles_store"])
    marks: list[tuple[float, int]] = []

    def write(start: int, rows: np.ndarray) -> None:
        marks.append((time.perf_counter(), len(rows)))

    if clock is not None:
        clock.reset()
    t0 = time.perf_counter()
    embed_slide(slide["path"], slide["slide_id"], tiles, encoder, write, params, progress=False)
    wall = time.perf_counter() - t0
    n = sum(k for _, k in marks)
    steady = (n - marks[0][1]) / (marks[-1][0] - marks[0][0]) if len(marks) > 2 else None
    out = {
        "wall_s": round(wall, 2),
        "patches_per_s": round(n / wall, 1),
        "steady_patches_per_s": round(steady, 1) if steady else None,
        "first_batch_s": round(marks[0][0] - t0, 2),
        "batches": len(marks),
        "mean_batch": round(n / len(marks), 1),
    }
    if clock is not None:
        out["encoder_busy_fraction"] = round(clock.busy_s() / wall, 3)
    return out


def extract_part(slides: dict[str, dict], encoder, clock, params, sh: Shapes) -> dict:
    from hwsi_model.slide.reader import open_slide

    device = next(encoder.parameters()).device
    x = slide_patches(slides["20x"], sh.rows_per_item).to(device)
    res: dict[str, Any] = {}
    n_b = max(1, math.ceil(sh.ceiling_patches / sh.rows_per_item))
    res["ceiling"] = ceiling(encoder, x, n_b, params.precision)
    ref = x.repeat(math.ceil(sh.ref_batch / len(x)), 1, 1, 1)[: sh.ref_batch]
    res["ceiling_ref_batch"] = ceiling(
        encoder, ref, max(1, sh.ceiling_patches // sh.ref_batch), params.precision
    )
    del x, ref
    log.info("ceiling: %s, at batch %d: %s", res["ceiling"], sh.ref_batch, res["ceiling_ref_batch"])
    for name, slide in slides.items():
        with open_slide(slide["path"]) as reader:
            direct = reader._direct is not None  # tiles decoded by tifffile, not OpenSlide
        loader = embed_timed(slide, NullEncoder(), params, None)
        log.info("%s loader alone: %s", name, loader)
        e2e = embed_timed(slide, encoder, params, clock)
        log.info("%s end to end: %s", name, e2e)
        res[name] = {
            **{k: v for k, v in slide.items() if k not in ("path", "tiles_store")},
            "direct_decode": direct,
            "end_to_end": e2e,
            "loader_only": loader,
            "e2e_over_ceiling": round(e2e["patches_per_s"] / res["ceiling"]["patches_per_s"], 3),
            "e2e_steady_over_ceiling": round(
                (e2e["steady_patches_per_s"] or 0) / res["ceiling"]["patches_per_s"], 3
            ),
        }
    return res


# -- part 2: cohort -----------------------------------------------------------------------------


def cohort_part(slides: list[dict], run, clock: EncoderClock, work: Path, budget_s: float) -> dict:
    """``embed_patches_step`` for each slide with one loaded encoder (as ``extract_batch`` runs
    them); GPU busy fraction over the embedding wall time. Stops adding slides after
    ``budget_s`` s since start-up (then ``reduced``)."""
    from hwsi_model.embed.steps import embed_patches_step
    from hwsi_model.samples import Sample

    device = next(run.loaded.parameters()).device
    per_slide, first = [], []
    clock.reset()
    with UtilSampler(device) as util:
        t0 = time.perf_counter()
        for s in slides:
            if per_slide and elapsed() > budget_s:
                log.warning(
                    "cohort: budget of %.0f s reached after %d slides", budget_s, len(per_slide)
                )
                break
            t = time.perf_counter()
            first.append(len(clock.spans))
            out = work / f"{s['slide_id']}.emb.zarr"
            embed_patches_step(Sample(s["slide_id"], s["path"]), s["tiles_store"], run, out)
            per_slide.append({"slide_id": s["slide_id"], "patches": s["n_patches"]})
            per_slide[-1]["wall_s"] = round(time.perf_counter() - t, 2)
            log.info("cohort: %s", per_slide[-1])
        wall = time.perf_counter() - t0
    busy = clock.busy_s()
    for row, a, b in zip(per_slide, first, [*first[1:], None], strict=True):
        row["encoder_s"] = round(clock.busy_s(a, b), 2)
    n = sum(r["patches"] for r in per_slide)
    return {
        "slides": len(per_slide),
        "slides_made": len(slides),
        "reduced": len(per_slide) < len(slides),
        "slide_px": slides[0]["level0_px"],
        "patches": n,
        "wall_s": round(wall, 2),
        "patches_per_s": round(n / wall, 1),
        "gpu_busy_cuda_events": round(busy / wall, 3),
        "gpu_busy_nvml": util.mean(),
        "nvml_samples": len(util.samples),
        "nvml_note": util.error,
        "per_slide": per_slide,
    }


# -- part 3: stage-3 step -----------------------------------------------------------------------


def tokenizer():
    """A word-level tokenizer (ids only matter: the batches are built from ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "slide", "tissue"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def slide_tensors(seed: int, sh: Shapes, d_p: int, d_c: int):
    """A random slide in the cache contract: ``sh.regions`` regions of S x S (80 % tissue),
    ``sh.top_k`` selected patches each, about ``sh.cells`` cells per selected patch."""
    from hwsi_model.model.batch import SlideTensors

    g = torch.Generator().manual_seed(seed)
    R, S, K = sh.regions, sh.region_size, sh.top_k
    tissue = torch.rand(R, S * S, generator=g) < 0.8
    tissue[:, 0] = True
    n = int(tissue.sum())
    grid = torch.full((R, S * S), -1, dtype=torch.int64)
    grid[tissue] = torch.arange(n)
    selected = torch.full((R, K), -1, dtype=torch.int64)
    for r in range(R):
        rows = grid[r][grid[r] >= 0]
        pick = rows[torch.randperm(len(rows), generator=g)[:K]]
        selected[r, : len(pick)] = pick
    m = int((selected >= 0).sum())
    counts = torch.randint(1, 2 * sh.cells, (m,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    c = int(offsets[-1])
    return SlideTensors(
        patch_emb=torch.randn(n, d_p, generator=g).half(),
        region_grid=grid.view(R, S, S),
        region_pos=torch.stack([torch.arange(R) // 8, torch.arange(R) % 8], dim=1),
        selected=selected,
        cell_emb=torch.randn(c, d_c, generator=g).half(),
        cell_pos=torch.rand(c, 2, generator=g),
        cell_offsets=offsets,
        slide_id=f"s{seed}",
    )


def visual_config(sh: Shapes, d_p: int, d_c: int):
    from hwsi_model.model.configuration import (
        CCAFConfig,
        ProjectorConfig,
        RegionEncoderConfig,
        SlideEncoderConfig,
        VisualConfig,
    )

    w = sh.visual_width
    if w is None:  # the paper's widths (VisualConfig defaults)
        return VisualConfig(
            patch_dim=d_p,
            cell_dim=d_c,
            region=RegionEncoderConfig(region_size=sh.region_size),
            gradient_checkpointing=True,
        )
    return VisualConfig(
        patch_dim=d_p,
        cell_dim=d_c,
        ccaf=CCAFConfig(hidden_size=w, num_layers=1, num_heads=2, position_frequencies=4),
        region=RegionEncoderConfig(
            hidden_size=w, num_layers=1, num_heads=2, region_size=sh.region_size
        ),
        slide=SlideEncoderConfig(hidden_size=w, num_layers=1, num_heads=2),
        projector=ProjectorConfig(align_dim=24),
        gradient_checkpointing=True,
    )


def build_stage3(sh: Shapes, tuning: str, device: torch.device, d_p: int, d_c: int):
    """HWSIModel with a random Qwen2-shaped decoder (bf16, gradient checkpointing), configured for
    stage 3 (``configure_stage``); returns ``(model, decoder parameter count)``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hwsi_model.model.configuration import HWSIConfig, LoraSettings
    from hwsi_model.model.mllm import HWSIModel
    from hwsi_model.model.stages import configure_stage

    cfg = Qwen2Config(
        **sh.llm,
        max_position_embeddings=max(4096, sh.seq),
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    with torch.device(device):
        llm = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    n_params = sum(p.numel() for p in llm.parameters())
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = HWSIConfig(
        visual=visual_config(sh, d_p, d_c),
        max_visual_tokens=sh.visual_tokens,
        lora=LoraSettings() if tuning == "lora" else None,
    )
    model = HWSIModel(config, llm, tokenizer())
    if tuning == "lora":
        model.apply_lora()
    model.to(device=device, dtype=torch.bfloat16).train()
    configure_stage(model, 3)
    return model, n_params


def text_batch(
    lengths: list[int], vocab: int, lo: int, answer: int, placeholder: int | None, seed: int
):
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` with rows of ``lengths``; the
    last ``answer`` tokens of each row supervised, ``placeholder`` (if any) at position 8."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(lo, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    labels = torch.full((len(lengths), T), -100, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0
        if placeholder is not None:
            ids[b, 8] = placeholder
        labels[b, n - answer : n] = ids[b, n - answer : n]
    return ids, mask, labels


def time_steps(step, sh: Shapes, device: torch.device) -> tuple[float, float | None]:
    """Seconds per step after ``sh.warmup`` steps, and peak device memory (GiB) or ``None``."""
    for _ in range(sh.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(sh.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / sh.steps
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return dt, mem


def stage3_tuning(sh: Shapes, tuning: str, batch, device: torch.device, d_p: int, peak) -> dict:
    """LLM-only and MLLM step of one stage-3 model (``tuning``: ``"full"`` or ``"lora"``)."""
    from hwsi_model.model.losses import causal_lm_loss

    model, n_params = build_stage3(sh, tuning, device, d_p, d_p + 6)
    proc, vocab = model.processor, sh.llm["vocab_size"]
    lo = len(proc.tokenizer) + 1
    with torch.no_grad():
        visual, _ = model.llm_visual_inputs(batch)
    n_vis = [len(v) for v in visual]
    lengths = [sh.seq - v + 1 for v in n_vis]  # the placeholder becomes the visual tokens
    mm = [
        t.to(device)
        for t in text_batch(lengths, vocab, lo, sh.answer_tokens, proc.placeholder_id, 1)
    ]
    txt = [
        t.to(device) for t in text_batch([sh.seq] * sh.batch, vocab, lo, sh.answer_tokens, None, 2)
    ]
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    seen: dict[str, Any] = {}

    def llm_step() -> None:
        logits = model.llm(input_ids=txt[0], attention_mask=txt[1]).logits
        causal_lm_loss(logits, txt[2]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def mllm_step() -> None:
        out = model(batch, mm[0], mm[1], mm[2])
        if not seen:  # checked once (a host synchronisation)
            seen.update(spliced=tuple(out.attention_mask.shape), real=int(out.attention_mask.sum()))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    row: dict[str, Any] = {
        "decoder_params": n_params,
        "trainable_params": sum(p.numel() for p in trainable),
        "visual_tokens_per_slide": n_vis,
        "attn_implementation": getattr(model.llm.config, "_attn_implementation", None),
    }
    for name, step in (("llm_only", llm_step), ("mllm", mllm_step)):
        dt, mem = time_steps(step, sh, device)
        tps = sh.batch * sh.seq / dt
        row[name] = {
            "step_s": round(dt, 4),
            "tokens_per_s": round(tps, 1),
            "mfu": round(6 * n_params * tps / peak, 4) if peak else None,
            "peak_mem_gib": round(mem, 2) if mem is not None else None,
        }
        log.info("stage 3 %s %s: %s", tuning, name, row[name])
    if seen["spliced"] != (sh.batch, sh.seq) or seen["real"] != sh.batch * sh.seq:
        raise RuntimeError(f"spliced sequences are {seen}, expected {sh.batch} x {sh.seq}")
    row["mllm_over_llm_only"] = round(
        row["mllm"]["tokens_per_s"] / row["llm_only"]["tokens_per_s"], 3
    )
    return row


def stage3_part(sh: Shapes, device: torch.device, d_p: int, peak: float | None) -> dict:
    """Stage-3 steps, full fine-tuning and LoRA, each against its LLM-only step."""
    from hwsi_model.model.batch import collate_slides

    slides = [slide_tensors(i, sh, d_p, d_p + 6) for i in range(sh.batch)]
    batch = collate_slides(slides).to(device)
    res: dict[str, Any] = {
        "batch": sh.batch,
        "seq_len": sh.seq,
        "tokens_per_step": sh.batch * sh.seq,
    }
    for tuning in ("full", "lora"):
        res[tuning] = stage3_tuning(sh, tuning, batch, device, d_p, peak)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return res


# -- report -------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    import peft
    import transformers

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    info = {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        if device.type == "cuda"
        else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "shm_gib": round(shutil.disk_usage("/dev/shm").total / 2**30, 1),
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    info["peak_bf16_flops"] = next((v for k, v in PEAK_BF16 if k in (info["gpu"] or "")), None)
    return info


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def markdown(r: dict) -> str:
    """The results as a Markdown section for benchmarks/RESULTS.md."""
    m, s = r["machine"], r["settings"]
    v, q = s["vit"], s["llm"]
    peak = m["peak_bf16_flops"]
    note = " -- REHEARSAL on CPU, tiny shapes: not figures" if s["rehearse"] else ""
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']} GiB)" if m["gpu"] else "no GPU"
    lines = [
        f"## GPU benchmark (`benchmarks/gpu/run.sh`){note}",
        "",
        f"Machine: {gpu}, torch {m['torch']}, CUDA {m['cuda']}, {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), Python {m['python']}, transformers {m['transformers']}, peft "
        f"{m['peft']}; {m['date']}; whole run {r['wall_s']} s. Random weights; synthetic JPEG "
        "(quality 90) 256 px-tiled pyramidal TIFFs, read from the page cache.",
        "",
    ]
    for part in ("extract", "cohort", "stage3"):
        if "error" in r.get(part, {}):
            lines += [f"### {part}: FAILED: {r[part]['error']}", ""]
    ex = r.get("extract", {})
    if "ceiling" in ex:
        c, cr = ex["ceiling"], ex["ceiling_ref_batch"]
        lines += [
            f"### Patch extraction: random ViT/16 ({v['num_hidden_layers']} layers, width "
            f"{v['hidden_size']}, 224 px), {s['precision']} autocast, {s['workers']} loader "
            f"workers, {s['rows_per_item']} patches per loader item (= batch), regions of "
            f"{s['region_size']} x {s['region_size']} patches",
            "",
            f"(b) the encoder alone on uint8 patches already on the device: {c['patches_per_s']:,} "
            f"patches/s at batch {c['batch']} ({cr['patches_per_s']:,} at batch {cr['batch']}).",
            "",
            "| slide | level-0 px | um/px | tissue patches | (a) end to end, patches/s (steady) "
            "| (c) loader alone, patches/s (steady) | (a)/(b) (steady) | mean batch | "
            "encoder busy in (a) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in ("20x", "40x"):
            x = ex[name]
            e, lo = x["end_to_end"], x["loader_only"]
            lines.append(
                f"| {name} | {x['level0_px']} | {x['mpp']} | {x['n_patches']:,} | "
                f"{e['patches_per_s']:,} ({e['steady_patches_per_s']}) | {lo['patches_per_s']:,} "
                f"({lo['steady_patches_per_s']}) | {_pct(x['e2e_over_ceiling'])} "
                f"({_pct(x['e2e_steady_over_ceiling'])}) | {e['mean_batch']} | "
                f"{_pct(e.get('encoder_busy_fraction'))} |"
            )
        lines += [
            "",
            "Target: (a) >= 80 % of (b) (>= 2,400 patches/s on an H200). TRIDENT on an H200 "
            "(DESIGN.md): 1,222 patches/s at batch 64, 1,534 at batch 256, loader 1,694 with 12 "
            "workers. 'steady': from the first batch on (no worker start-up, slide opening). "
            "The 40x slide has levels 1, 4, 16, 64: its 512 px patches are read from level 0 and "
            "halved in the workers.",
            "",
        ]
    co = r.get("cohort", {})
    if "slides" in co:
        cut = f" (budget reached: {co['slides_made']} made)" if co["reduced"] else ""
        lines += [
            f"### Cohort through `embed_patches_step`, one encoder loaded: {co['slides']} slides "
            f"of {co['slide_px']} px{cut}",
            "",
            "| slides | patches | wall s | patches/s | GPU busy, CUDA events | GPU busy, NVML |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {co['slides']} | {co['patches']:,} | {co['wall_s']} | {co['patches_per_s']:,} | "
            f"{_pct(co['gpu_busy_cuda_events'])} | {_pct(co['gpu_busy_nvml'])} |",
            "",
            "Patch embedding only (no StarDist/TensorFlow on the GPU machine; cell embeddings need "
            "its nuclei). CUDA events: the sum over batches of the GPU time from the encoder's "
            "preprocess to the end of its forward (H2D copies excluded) over the wall time of the "
            "slides' embedding steps; NVML: mean of `torch.cuda.utilization()` sampled every "
            "0.1 s (share of time a kernel ran). Target >= 90 %.",
            "",
        ]
    st = r.get("stage3", {})
    if "full" in st:
        lines += [
            f"### Stage-3 training step: random Qwen2-shaped decoder ({q['num_hidden_layers']} "
            f"layers, hidden {q['hidden_size']}, {q['num_attention_heads']}/"
            f"{q['num_key_value_heads']} heads, MLP {q['intermediate_size']}, vocab "
            f"{q['vocab_size']}), bf16 weights, AdamW, gradient checkpointing, batch "
            f"{st['batch']} x {st['seq_len']} tokens",
            "",
            "| tuning | step | tokens/s | MFU | vs LLM-only | peak GiB |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for tuning in ("full", "lora"):
            row = st[tuning]
            for name in ("llm_only", "mllm"):
                x = row[name]
                mfu = f"{x['mfu']:.1%}" if x["mfu"] is not None else "n/a"
                vs = "1.00" if name == "llm_only" else f"{row['mllm_over_llm_only']:.2f}"
                tps, mem = x["tokens_per_s"], x["peak_mem_gib"] or "n/a"
                lines.append(f"| {tuning} | {name} | {tps:,} | {mfu} | {vs} | {mem} |")
        n = st["full"]["decoder_params"]
        peak_txt = f"{(peak or 0) / 1e12:.0f} TFLOP/s, the dense bf16 peak of the {m['gpu']}"
        lines += [
            "",
            f"MFU = 6 x {n / 1e6:.1f}M decoder parameters (tied embeddings counted once) x "
            f"tokens/s / {peak_txt if peak else 'peak (none known here)'}; LoRA counted the "
            "same (it overstates LoRA's FLOPs). mllm: HWSIModel.forward, i.e. the visual hierarchy "
            f"(frozen in stage 3; {s['regions']} regions, top {s['top_k']} patches, ~{s['cells']} "
            f"cells each) and {st['full']['visual_tokens_per_slide'][0]} visual tokens per slide "
            "spliced among the text embeddings, same token count as llm_only. Target >= 90 % of "
            "LLM-only. DESIGN.md: 68,700 tokens/s for the full step on an H200.",
            "",
        ]
    return "\n".join(lines)


def save(results: dict, out: Path) -> None:
    results["wall_s"] = round(elapsed(), 1)
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "gpu_results.md").write_text(markdown(results) + "\n")


def run_part(name: str, fn, results: dict, out: Path, strict: bool) -> None:
    """``results[name] = fn()``, timed; a failure is recorded (raised when ``strict``)."""
    t = elapsed()
    try:
        results[name] = fn()
    except Exception as exc:
        if strict:
            raise
        log.exception("part %s failed", name)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    results["timings_s"][name] = round(elapsed() - t, 1)
    save(results, out)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/gpu/out"))
    ap.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes")
    ap.add_argument("--parts", default="extract,stage3,cohort")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--precision", default="bf16", help="encoder autocast: bf16 | fp16 | fp32")
    ap.add_argument("--workers", type=int, help="loader workers (GPU default 14)")
    ap.add_argument("--rows-per-item", type=int, help="patches per loader item = batch (GPU 256)")
    ap.add_argument("--region-size", type=int, help="patches per region side (GPU 16)")
    ap.add_argument("--slide-px", type=int, help="level-0 side of the 0.5 um/px slide (32768)")
    ap.add_argument("--cohort-px", type=int, help="level-0 side of the cohort's slides (32768)")
    ap.add_argument("--cohort-slides", type=int, help="slides in the cohort (20)")
    ap.add_argument("--batch", type=int, help="stage-3 sequences per step (8)")
    ap.add_argument("--seq-len", type=int, help="stage-3 tokens per sequence (2048)")
    ap.add_argument("--steps", type=int, help="timed stage-3 steps (8)")
    ap.add_argument("--budget-s", type=float, help="no new cohort slide after this (GPU 420)")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--strict", action="store_true", help="raise at once when a part fails")
    args = ap.parse_args()
    over = {
        "workers": args.workers,
        "rows_per_item": args.rows_per_item,
        "region_size": args.region_size,
        "slide_px": args.slide_px,
        "cohort_px": args.cohort_px,
        "cohort_slides": args.cohort_slides,
        "batch": args.batch,
        "seq": args.seq_len,
        "steps": args.steps,
        "budget_s": args.budget_s,
    }
    sh = REHEARSE if args.rehearse else GPU
    sh = dataclasses.replace(sh, **{k: v for k, v in over.items() if v is not None})
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "gpu_results.log", "w")],
    )
    for noisy in ("hwsi_model", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from hwsi_model.devices import resolve_device
    from hwsi_model.embed.params import ExtractParams
    from hwsi_model.embed.steps import EncoderRun
    from hwsi_model.encoders import load_encoder

    device = resolve_device(args.device)
    if not args.rehearse and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --rehearse on CPU")
    parts = args.parts.split(",")
    cpus = len(os.sched_getaffinity(0))
    results: dict[str, Any] = {
        "machine": {},
        "settings": {**dataclasses.asdict(sh), "rehearse": args.rehearse},
        "timings_s": {},
    }
    results["settings"].update(precision=args.precision, device=str(device), parts=parts)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwsi_gpu_bench_"))
    params = ExtractParams(sh.rows_per_item, sh.workers, str(device), args.precision)
    try:
        # Every slide is written and prepared (CPU, forked processes) before a CUDA context exists.
        t = elapsed()
        n = sh.slide_px // TILE
        jobs = []
        if "extract" in parts:
            jobs += [
                (str(work / "x"), f"slide{k}", n, mpp, 0, sh.region_size)
                for k, mpp in (("40x", 0.25), ("20x", 0.5))
            ]
        if "cohort" in parts:
            m = sh.cohort_px // TILE
            jobs += [
                (str(work / "c"), f"c{i:02d}", m, 0.5, 100 + i, sh.region_size)
                for i in range(sh.cohort_slides)
            ]
        procs = max(1, min(8, cpus, len(jobs)))
        made = {x["slide_id"]: x for x in make_slides(jobs, procs, max(1, cpus // procs))}
        results["timings_s"]["make_slides"] = round(elapsed() - t, 1)
        log.info("%d slides written and prepared in %.0f s", len(made), elapsed() - t)
        results["machine"] = machine(device)
        log.info("machine: %s", results["machine"])
        t = elapsed()
        build_vit(work / "vit", sh.vit, device)
        encoder = load_encoder("hf", checkpoint=str(work / "vit"), device=device)
        clock = EncoderClock(encoder, device)
        run = EncoderRun("hf", str(work / "vit"), params, loaded=encoder)
        results["settings"]["encoder"] = {
            "embed_dim": encoder.embed_dim,
            "input_size": encoder.input_size,
            "attn_implementation": getattr(encoder.model.config, "_attn_implementation", None),
        }
        results["timings_s"]["build_encoder"] = round(elapsed() - t, 1)
        for part in parts:
            if part == "extract":
                slides = {"20x": made["slide20x"], "40x": made["slide40x"]}
                fn = partial(extract_part, slides, encoder, clock, params, sh)
            elif part == "stage3":
                peak = results["machine"]["peak_bf16_flops"]
                fn = partial(stage3_part, sh, device, encoder.embed_dim, peak)
            elif part == "cohort":
                cohort = [made[f"c{i:02d}"] for i in range(sh.cohort_slides)]
                fn = partial(cohort_part, cohort, run, clock, work / "emb", sh.budget_s)
            else:
                raise SystemExit(f"unknown part {part!r}: extract, stage3, cohort")
            run_part(part, fn, results, args.out, args.strict)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save(results, args.out)
    log.info("done in %.0f s: %s", elapsed(), args.out / "gpu_results.json")
    failed = [p for p in parts if "error" in results.get(p, {})]
    if failed:
        raise SystemExit(f"failed parts: {', '.join(failed)} (see gpu_results.log)")


if __name__ == "__main__":
    main()
