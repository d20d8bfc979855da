"""Patch embedding throughput on CPU and cache size (issue 4).

1. End to end (slide -> float16 Zarr) with hwsi's engine, a ViT-B/16-sized random encoder
   (Hugging Face ViT, 224 px, fp32 on CPU), against
   - the compute-only ceiling: the same encoder on pre-decoded, pre-resized tensors;
   - a CLAM-style loop: ``read_region`` per patch, PIL resize, one process, fp32, batch 32.
2. Cache size per 1,000 patches: float16 Zarr (as written) against float32 HDF5 (CLAM's
   ``.h5`` features) of the same embeddings.
3. Memory stays flat with slide size: peak RSS of ``embed_patches_step`` (tiny encoder) on a
   demo slide and on a slide with 4x the area, each in a fresh process.

Usage: python benchmarks/bench_extract.py [--patches 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


# Peak RSS of the child itself: getrusage's ru_maxrss survives exec, so a child would report
# its parent's peak; /proc's VmHWM belongs to the new address space (Linux).
VM_HWM = """
def vm_hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def build_vit_b(folder: Path) -> None:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)


def clam_loop(slide: Path, coords: np.ndarray, encoder, batch: int = 32) -> float:
    import openslide
    from PIL import Image

    osr = openslide.OpenSlide(str(slide))
    t = time.perf_counter()
    buf = []
    with torch.inference_mode():
        for i, (x, y) in enumerate(coords):
            img = osr.read_region((int(x), int(y)), 0, (256, 256)).convert("RGB")
            arr = np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
            buf.append(torch.from_numpy(arr / 255.0).permute(2, 0, 1))
            if len(buf) == batch or i == len(coords) - 1:
                x_ = torch.stack(buf)
                mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
                std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
                encoder((x_ - mean) / std)
                buf = []
    return len(coords) / (time.perf_counter() - t)


def peak_rss_embed(slide: Path, tiles_store: Path, enc_dir: Path, out: Path) -> float:
    code = (
        VM_HWM
        + f"""
import sys
from hwsi_model.embed.extract import ExtractParams
from hwsi_model.embed.steps import EncoderRun, embed_patches_step
from hwsi_model.samples import Sample
run = EncoderRun("tiny-vit", {str(enc_dir)!r}, ExtractParams(num_workers=0))
embed_patches_step(Sample("s", {str(slide)!r}), {str(tiles_store)!r}, run, {str(out)!r})
print(vm_hwm_mb())
"""
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import zarr

    from hwsi_model.data.stores.tiles import TileGrid
    from hwsi_model.data.stores.zarr_io import RowWriter
    from hwsi_model.demo import generate_demo_cohort
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder
    from hwsi_model.embed.extract import ExtractParams, embed_slide
    from hwsi_model.encoders import load_encoder
    from hwsi_model.tiling.steps import tiling_step, tissue_step
    from hwsi_model.tiling.tissue import TissueParams

    torch.set_num_threads(2)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sheet = generate_demo_cohort(tmp / "c", n_slides=3, seed=0, scale=2.0, progress=False)
        slide = sheet.parent / "slides" / "demo_000.tiff"
        tissue_step(slide, "s", tmp / "t", TissueParams())
        tiles = tiling_step("s", tmp / "t", tmp / "tiles.zarr", tmp / "qc.png", region_size=16)
        n = min(args.patches, len(tiles))
        sub = TileGrid(
            geometry=tiles.geometry,
            slide_dimensions=tiles.slide_dimensions,
            coords=tiles.coords[:n],
            grid=tiles.grid[:n],
            region=np.zeros(n, np.int32),
            region_pos=tiles.region_pos[:n],
            tissue_fraction=tiles.tissue_fraction[:n],
            region_coords=tiles.region_coords[:1],
            region_grid=tiles.region_grid[:1],
            region_offsets=np.array([0, n]),
            grid_shape=tiles.grid_shape,
        )
        build_vit_b(tmp / "vitb")
        enc = load_encoder("hf", checkpoint=str(tmp / "vitb"))
        # compute-only ceiling: pre-decoded, pre-resized, pre-normalised tensors
        x = enc.preprocess(torch.randint(0, 255, (32, 256, 256, 3), dtype=torch.uint8))
        with torch.inference_mode():
            enc(x[:4])
            t = time.perf_counter()
            for _ in range(max(1, n // 32)):
                enc(x)
            ceiling = max(1, n // 32) * 32 / (time.perf_counter() - t)
        arr = zarr.open_group(str(tmp / "e.zarr"), mode="w").create_array(
            "emb", shape=(n, enc.embed_dim), dtype="float16", chunks=(min(n, 682), enc.embed_dim)
        )
        w = RowWriter(arr)
        t = time.perf_counter()
        embed_slide(
            str(slide),
            "s",
            sub,
            enc,
            w.write,
            ExtractParams(num_workers=args.workers, rows_per_item=32),
            progress=False,
        )
        w.close()
        ours = n / (time.perf_counter() - t)
        clam = clam_loop(slide, sub.coords, enc)
        results["throughput"] = {
            "patches": n,
            "hwsi_end_to_end": round(ours, 2),
            "compute_only_ceiling": round(ceiling, 2),
            "clam_style_loop": round(clam, 2),
            "share_of_ceiling": round(ours / ceiling, 3),
        }
        # cache size per 1,000 patches (ViT-B width), float16 Zarr vs float32 HDF5
        import h5py

        emb = np.random.default_rng(0).normal(size=(1000, 768)).astype(np.float32)
        g = zarr.open_group(str(tmp / "size.zarr"), mode="w")
        g.create_array("emb", shape=emb.shape, dtype="float16", chunks=(682, 768))[...] = emb
        with h5py.File(tmp / "size.h5", "w") as h:
            h.create_dataset("features", data=emb)
        zsize = sum(p.stat().st_size for p in (tmp / "size.zarr").rglob("*") if p.is_file())
        results["size_per_1000_patches_MB"] = {
            "zarr_float16": round(zsize / 1e6, 2),
            "hdf5_float32": round((tmp / "size.h5").stat().st_size / 1e6, 2),
        }
        # memory vs slide size (tiny encoder)
        build_tiny_encoder(tmp / "tiny", seed=0)
        mem = {}
        for scale in (1.0, 2.0, 4.0):
            d = tmp / f"m{scale}"
            s = generate_demo_cohort(d, n_slides=3, seed=1, scale=scale, progress=False)
            sl = s.parent / "slides" / "demo_000.tiff"
            tissue_step(sl, "s", d / "t", TissueParams())
            tl = tiling_step("s", d / "t", d / "tiles.zarr", d / "qc.png")
            mem[f"scale {scale}: {len(tl)} patches"] = round(
                peak_rss_embed(sl, d / "tiles.zarr", tmp / "tiny", d / "emb.zarr"), 1
            )
        results["peak_rss_MB_tiny_encoder"] = mem
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
