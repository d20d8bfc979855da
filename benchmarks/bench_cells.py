"""Nucleus segmentation throughput on CPU: hwsi's step vs a plain predict_instances loop.

Needs the demo's outputs (``make demo``): slides, tiles stores and the trained demo model.

- ``hwsi``: :func:`hwsi_model.cells.segment.segment_patches` on the interim patch list
  (one window per patch with a 16 um context margin, per-slide normalisation, features);
- ``plain loop``: ``OpenSlide.read_region`` per patch + csbdeep per-tile ``normalize`` +
  ``StarDist2D.predict_instances`` (no margin, no features) over the same patches.

Megapixels are counted over the patches' own area (256 x 256 px each), so the margin hwsi
reads is its cost, not a bonus. Also measures the peak RSS of an all-tissue (block-wise)
run on the largest demo slide, in a fresh process.

Usage: python benchmarks/bench_cells.py [--demo-dir demo] [--slides 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide

# Peak RSS of the child itself: getrusage's ru_maxrss survives exec, so a child would report
# its parent's peak; /proc's VmHWM belongs to the new address space (Linux).
VM_HWM = """
def vm_hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def plain_loop(model, slide_path: str, coords: np.ndarray, ps0: int) -> tuple[int, float]:
    from csbdeep.utils import normalize

    slide = openslide.OpenSlide(slide_path)
    n = 0
    t = time.perf_counter()
    for x, y in coords:
        rgb = np.asarray(slide.read_region((int(x), int(y)), 0, (ps0, ps0)).convert("RGB"))
        labels, _ = model.predict_instances(
            normalize(rgb, 1, 99.8, axis=(0, 1)), show_tile_progress=False
        )
        n += int(labels.max())
    return n, time.perf_counter() - t


def peak_rss_all_mode(demo: Path, slide_id: str, model_dir: Path) -> dict:
    code = (
        VM_HWM
        + f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from hwsi_model.cells.model_registry import load_stardist
from hwsi_model.cells.segment import SegmentParams, segment_patches
from hwsi_model.slide.reader import open_slide
from hwsi_model.data.stores.tiles import read_tiles
import numpy as np
tiles, _ = read_tiles({str(demo / "results" / "tiles" / f"{slide_id}.zarr")!r})
model, _ = load_stardist({str(model_dir)!r})
with open_slide({str(demo / "cohort" / "slides" / f"{slide_id}.tiff")!r}) as r:
    t, _, _ = segment_patches(r, model, tiles, np.arange(len(tiles)), SegmentParams(block=4),
                           progress=False)
print(len(t), len(tiles), vm_hwm_mb())
"""
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cells, patches, mb = out.stdout.split()[-3:]
    return {
        "slide": slide_id,
        "patches": int(patches),
        "nuclei": int(cells),
        "peak_rss_mb": float(mb),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-dir", type=Path, default=Path("demo"))
    ap.add_argument("--slides", type=int, default=3)
    args = ap.parse_args()
    from hwsi_model.cells.model_registry import load_stardist
    from hwsi_model.cells.segment import SegmentParams, segment_patches
    from hwsi_model.cells.steps import read_patch_list
    from hwsi_model.data.stores.tiles import read_tiles
    from hwsi_model.slide.reader import open_slide

    demo = args.demo_dir
    model_dir = demo / "results" / "models" / "stardist_demo"
    model, _ = load_stardist(str(model_dir))
    ids = sorted(p.stem for p in (demo / "results" / "patch_lists").glob("*.csv"))
    rows = []
    for sid in ids[: args.slides]:
        tiles, _ = read_tiles(demo / "results" / "tiles" / f"{sid}.zarr")
        if tiles.geometry.patch_size_level0 != tiles.geometry.patch_size:
            continue  # keep the plain loop at level 0 without resizing
        patches = read_patch_list(demo / "results" / "patch_lists" / f"{sid}.csv", tiles)
        slide = demo / "cohort" / "slides" / f"{sid}.tiff"
        with open_slide(slide) as reader:
            t = time.perf_counter()
            table, _, _ = segment_patches(
                reader, model, tiles, patches, SegmentParams(block=1), progress=False
            )
            ours = time.perf_counter() - t
        n_plain, plain = plain_loop(model, str(slide), tiles.coords[patches], 256)
        mp = len(patches) * 256 * 256 / 1e6
        rows.append(
            {
                "slide": sid,
                "patches": len(patches),
                "mp": mp,
                "hwsi_nuclei": len(table),
                "hwsi_s": ours,
                "plain_nuclei": n_plain,
                "plain_s": plain,
            }
        )
    print(
        "| slide | patches | MP | hwsi nuclei | hwsi nuclei/s | hwsi MP/s "
        "| plain nuclei | plain nuclei/s | plain MP/s |"
    )
    print("|" + " --- |" * 9)
    for r in rows:
        print(
            f"| {r['slide']} | {r['patches']} | {r['mp']:.2f} | {r['hwsi_nuclei']} "
            f"| {r['hwsi_nuclei'] / r['hwsi_s']:.0f} | {r['mp'] / r['hwsi_s']:.2f} "
            f"| {r['plain_nuclei']} | {r['plain_nuclei'] / r['plain_s']:.0f} "
            f"| {r['mp'] / r['plain_s']:.2f} |"
        )
    sizes = {sid: (demo / "cohort" / "slides" / f"{sid}.tiff").stat().st_size for sid in ids}
    largest = max(sizes, key=sizes.get)
    mem = peak_rss_all_mode(demo, largest, model_dir)
    print(f"\nall-tissue mode (block 4), largest demo slide: {json.dumps(mem)}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this process: peak RSS {rss:.0f} MB)")


if __name__ == "__main__":
    main()
