"""Patch reading throughput at 0.5 um/px: hwsi's block reader vs a plain read_region loop.

Both read the same full grid of 256 px patches at 0.5 um/px (every grid cell, tissue or not,
so the figure does not depend on tissue detection) on one core and return RGB uint8 arrays:

- ``loop, level 0``: one ``OpenSlide.read_region`` per patch at level 0, ``convert("RGB")``,
  PIL resize when the level-0 patch is not 256 px;
- ``loop, best level``: the same from the best pyramid level (what CLAM and TRIDENT do);
- ``hwsi iter_patches``: one read per block of 8 x 8 patches from the best pyramid level,
  resized once, cut in memory (:func:`hwsi_model.slide.patches.iter_patches`).

Usage::

    python benchmarks/bench_reading.py SLIDE [SLIDE ...] [--repeats 3]
    python benchmarks/bench_reading.py --demo     # also generates two large demo slides
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from hwsi_model.slide.patches import iter_patches
from hwsi_model.slide.reader import open_slide
from hwsi_model.tiling.grid import patch_geometry

log = logging.getLogger("bench_reading")


def full_grid(dims: tuple[int, int], ps0: int) -> np.ndarray:
    cols, rows = dims[0] // ps0, dims[1] // ps0
    r, c = np.mgrid[0:rows, 0:cols]
    return np.stack([c.ravel() * ps0, r.ravel() * ps0], axis=1)


def plain_loop(path: str, coords: np.ndarray, ps0: int, ps: int, best_level: bool) -> float:
    slide = openslide.OpenSlide(path)
    level = slide.get_best_level_for_downsample(ps0 / ps + 1e-6) if best_level else 0
    size = round(ps0 / slide.level_downsamples[level])
    t = time.perf_counter()
    for x, y in coords:
        img = slide.read_region((int(x), int(y)), level, (size, size)).convert("RGB")
        if size != ps:
            img = img.resize((ps, ps), Image.Resampling.BILINEAR)
        np.asarray(img)
    dt = time.perf_counter() - t
    slide.close()
    return len(coords) / dt


def hwsi_blocks(path: str, coords: np.ndarray, ps0: int, ps: int, block: int) -> float:
    with open_slide(path) as reader:
        t = time.perf_counter()
        n = sum(1 for _ in iter_patches(reader, coords, ps0, ps, block=block))
        dt = time.perf_counter() - t
    assert n == len(coords)
    return n / dt


def bench(path: Path, repeats: int, block: int) -> dict:
    with open_slide(path) as r:
        geom = patch_geometry(r.mpp, 0.5, 256, 16)
        dims, mpp, vendor = r.dimensions, r.mpp, r.vendor
    coords = full_grid(dims, geom.patch_size_level0)
    ps0, ps = geom.patch_size_level0, geom.patch_size
    plain = max(plain_loop(str(path), coords, ps0, ps, False) for _ in range(repeats))
    plain_best = max(plain_loop(str(path), coords, ps0, ps, True) for _ in range(repeats))
    ours = max(hwsi_blocks(str(path), coords, ps0, ps, block) for _ in range(repeats))
    return {
        "slide": path.name,
        "vendor": vendor,
        "dimensions": list(dims),
        "mpp": round(mpp, 4),
        "patch_size_level0": ps0,
        "patches": len(coords),
        "openslide_loop_patches_per_s": round(plain, 1),
        "openslide_loop_best_level_patches_per_s": round(plain_best, 1),
        "hwsi_patches_per_s": round(ours, 1),
        "speedup": round(ours / plain, 2),
        "speedup_vs_best_level": round(ours / plain_best, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("slides", nargs="*", type=Path)
    ap.add_argument("--demo", action="store_true", help="add large synthetic slides (0.5, 0.25)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--json", type=Path, help="write results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    slides = list(args.slides)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            from hwsi_model.demo import generate_demo_cohort

            sheet = generate_demo_cohort(Path(tmp), n_slides=6, seed=0, scale=2.5)
            cohort = json.loads((sheet.parent / "cohort.json").read_text())
            seen = set()
            for s in cohort["slides"]:
                if s["mpp"] not in seen:
                    seen.add(s["mpp"])
                    slides.append(sheet.parent / "slides" / f"{s['slide_id']}.tiff")
        results = [bench(p, args.repeats, args.block) for p in slides]
    header = (
        "| slide | vendor | level-0 px | um/px | patch px at level 0 | patches "
        "| loop, level 0 (patches/s) | loop, best level (patches/s) | hwsi (patches/s) "
        "| speed-up vs level 0 / best level |"
    )
    print(header)
    print("|" + " --- |" * 10)
    for r in results:
        w, h = r["dimensions"]
        print(
            f"| {r['slide']} | {r['vendor']} | {w} x {h} | {r['mpp']} | {r['patch_size_level0']} "
            f"| {r['patches']} | {r['openslide_loop_patches_per_s']} "
            f"| {r['openslide_loop_best_level_patches_per_s']} | {r['hwsi_patches_per_s']} "
            f"| {r['speedup']}x / {r['speedup_vs_best_level']}x |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
