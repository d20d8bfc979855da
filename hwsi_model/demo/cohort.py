"""Generate a small, deterministic synthetic whole-slide-image cohort.

Layout under ``outdir``::

    samples.csv             slide_id,path,split,label,cohort (path relative to outdir)
    slides/{slide_id}.tiff  pyramidal tiled JPEG TIFF (OpenSlide generic-tiff)
    reports.jsonl           one report record per slide (see reports.build_report)
    vqa/{split}.json        WSI-Bench / LLaVA style question-answer items
    nuclei_gt/              uint16 instance masks of 256x256 level-0 tiles + index.csv
    annotations/            where the lesion is: one PNG mask per slide + index.csv
                            (hwsi_model.data.annotations), for measuring the evidence maps
    cohort.json             generator parameters and per-slide geometry

Each slide uses its own ``numpy.random.Generator`` seeded from (seed, stream, slide index),
so a larger ``n_slides`` with the same seed leaves the first slides byte-identical.
Every file is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from hwsi_model.atomic import atomic_output
from hwsi_model.data.annotations import MaskAnnotation, write_annotations, write_mask

from .pyramid_tiff import write_pyramid_tiff
from .reports import build_report, build_vqa_items
from .synthetic_tissue import (
    LESION_CODES,
    NUC_EPITHELIAL,
    SLIDE_CLASSES,
    SlideRender,
    SlideSpec,
    measure_slide,
    render_slide,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "hwsi-demo-cohort/1"
COHORT_NAME = "demo"
SPLITS = ("train", "val", "test")
GT_TILE_PX = 256
GT_TILES_PER_SLIDE = 3
HIGH_RES_MPP, DEFAULT_MPP = 0.25, 0.5
#: Resolution of the lesion masks (about; an integer number of level-0 pixels per mask pixel).
ANNOTATION_UM = 2.0
# Random streams: (seed, stream, index) keeps draws for different purposes independent.
_STREAM_RENDER, _STREAM_CLASS, _STREAM_TEXT, _STREAM_SIZE, _STREAM_SPLIT = range(5)


# ----------------------------------------------------------------------------- planning


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def plan_slides(n_slides: int, seed: int, scale: float) -> list[SlideSpec]:
    """Class, resolution and physical size of every slide.

    Classes are balanced by shuffling ``SLIDE_CLASSES`` within consecutive groups of three
    slides. The 2nd, 10th, ... slide of each class is scanned at 0.25 um/px, the rest at
    0.5 um/px. Size is 1000-1500 x 800-1300 um times ``scale`` (rounded to whole um).
    """
    specs, seen = [], {c: 0 for c in SLIDE_CLASSES}
    for i in range(n_slides):
        perm = _rng(seed, _STREAM_CLASS, i // 3).permutation(len(SLIDE_CLASSES))
        label = SLIDE_CLASSES[int(perm[i % 3])]
        mpp = HIGH_RES_MPP if seen[label] % 8 == 1 else DEFAULT_MPP
        seen[label] += 1
        size_rng = _rng(seed, _STREAM_SIZE, i)
        width = max(round(size_rng.uniform(1000, 1500) * scale), 100)
        height = max(round(size_rng.uniform(800, 1300) * scale), 100)
        specs.append(SlideSpec(f"demo_{i:03d}", label, mpp, width, height))
    return specs


def assign_splits(labels: list[str], seed: int) -> list[str]:
    """Stratified train/val/test split: per class ~25 % test, ~12.5 % val, >= 1 train.

    For 8 slides of a class this gives 5 train, 1 val, 2 test. Deterministic given seed.
    """
    splits = [""] * len(labels)
    for ci, cls in enumerate(SLIDE_CLASSES):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        m = len(idx)
        n_test, n_val = int(m * 0.25 + 0.5), int(m * 0.125 + 0.5)
        while m - n_test - n_val < 1 and n_test + n_val > 0:
            if n_val:
                n_val -= 1
            else:
                n_test -= 1
        order = _rng(seed, _STREAM_SPLIT, ci).permutation(m)
        for rank, j in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            splits[idx[int(j)]] = split
    return splits


# ----------------------------------------------------------------------------- outputs


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_json(path: Path, obj: object) -> None:
    _write_text(path, json.dumps(obj, indent=1) + "\n")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _write_text(path, buf.getvalue())


def select_gt_tiles(
    render: SlideRender, n_tiles: int = GT_TILES_PER_SLIDE, size: int = GT_TILE_PX, cell: int = 32
) -> list[tuple[int, int, int, int]]:
    """Non-overlapping level-0 tiles (x, y, width, height) holding the most lesional nuclei.

    Nucleus centres are binned into ``cell`` px cells and windows are scored with an
    integral image (a lesional nucleus outweighs any number of stromal ones, which only
    break ties or fill in on slides with little lesion); tiles start on the cell grid and
    are clipped to the image for very small slides.
    """
    h, w = render.labels.shape
    k_y, k_x = max(min(size, h) // cell, 1), max(min(size, w) // cell, 1)
    nuc = render.nuclei
    weight = np.where(nuc["type"] == NUC_EPITHELIAL, 100_000, 1)
    hist = np.zeros((math.ceil(h / cell), math.ceil(w / cell)), dtype=np.int64)
    np.add.at(hist, ((nuc["cy"] // cell).astype(int), (nuc["cx"] // cell).astype(int)), weight)
    integral = np.pad(hist.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    # Top-left cells whose window stays inside the image.
    ny, nx = max((h - k_y * cell) // cell + 1, 1), max((w - k_x * cell) // cell + 1, 1)
    ys, xs = np.arange(ny)[:, None], np.arange(nx)[None, :]
    score = (
        integral[ys + k_y, xs + k_x]
        - integral[ys, xs + k_x]
        - integral[ys + k_y, xs]
        + integral[ys, xs]
    )
    tiles: list[tuple[int, int, int, int]] = []
    for flat in np.argsort(-score.ravel(), kind="stable"):
        if len(tiles) == n_tiles or score.ravel()[flat] == 0:
            break
        ty, tx = divmod(int(flat), nx)
        x, y = tx * cell, ty * cell
        if all(abs(x - ox) >= k_x * cell or abs(y - oy) >= k_y * cell for ox, oy, _, _ in tiles):
            tiles.append((x, y, min(k_x * cell, w - x), min(k_y * cell, h - y)))
    return tiles


def _write_gt_tiles(render: SlideRender, gt_dir: Path) -> list[list]:
    """Write uint16 instance masks for the selected tiles; returns index.csv rows."""
    rows = []
    spec = render.spec
    for x, y, tw, th in select_gt_tiles(render):
        crop = render.labels[y : y + th, x : x + tw]
        relabeled, _, _ = relabel_sequential(crop)
        n = int(relabeled.max())
        name = f"{spec.slide_id}_x{x}_y{y}.tif"
        with atomic_output(gt_dir / name) as tmp:
            tifffile.imwrite(tmp, relabeled.astype(np.uint16), compression="zlib", metadata=None)
        rows.append([spec.slide_id, x, y, tw, th, spec.mpp, f"nuclei_gt/{name}", n])
    return rows


def write_lesion_annotation(render: SlideRender, ann_dir: Path) -> MaskAnnotation:
    """Write where the lesion is (lesional compartments of the code map, block majority at
    about :data:`ANNOTATION_UM` um/px) as ``ann_dir/<slide>_lesion.png``."""
    spec = render.spec
    f = max(1, round(ANNOTATION_UM / spec.mpp))
    lesion = np.isin(render.code, LESION_CODES)
    h, w = math.ceil(lesion.shape[0] / f), math.ceil(lesion.shape[1] / f)
    padded = np.zeros((h * f, w * f), dtype=np.float32)
    padded[: lesion.shape[0], : lesion.shape[1]] = lesion
    mask = padded.reshape(h, f, w, f).mean((1, 3)) >= 0.5
    path = write_mask(ann_dir / f"{spec.slide_id}_lesion.png", mask)
    return MaskAnnotation(spec.slide_id, path, f * spec.mpp, "lesion")


# ----------------------------------------------------------------------------- main


def _validate(n_slides: int, seed: int, scale: float) -> None:
    if isinstance(n_slides, bool) or not isinstance(n_slides, (int, np.integer)) or n_slides < 3:
        raise ValueError(f"n_slides must be an integer >= 3 (one per class), got {n_slides!r}")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def generate_demo_cohort(
    outdir: Path, n_slides: int = 24, seed: int = 0, scale: float = 1.0, progress: bool = True
) -> Path:
    """Generate the synthetic demo cohort under ``outdir`` and return the samples.csv path.

    ``n_slides`` (>= 3) slides, classes balanced over ``SLIDE_CLASSES``; ``scale``
    multiplies the linear physical size (default about 1.0-1.5 x 0.8-1.3 mm, i.e. about
    2000-3000 level-0 px per side at 0.5 um/px). Raises ValueError for bad arguments.
    """
    _validate(n_slides, seed, scale)
    outdir = Path(outdir)
    slides_dir, gt_dir, vqa_dir = outdir / "slides", outdir / "nuclei_gt", outdir / "vqa"
    ann_dir = outdir / "annotations"
    for d in (slides_dir, gt_dir, vqa_dir, ann_dir):
        d.mkdir(parents=True, exist_ok=True)

    specs = plan_slides(n_slides, seed, scale)
    splits = assign_splits([s.label for s in specs], seed)
    logger.info(
        "Generating %d demo slides (seed=%d, scale=%g) in %s", n_slides, seed, scale, outdir
    )

    records, gt_rows, slide_meta, lesions = [], [], [], []
    vqa: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, (spec, split) in enumerate(
        tqdm(
            list(zip(specs, splits, strict=True)),
            desc="demo slides",
            unit="slide",
            disable=not progress,
        )
    ):
        render = render_slide(spec, _rng(seed, _STREAM_RENDER, i))
        facts = measure_slide(render)
        levels = write_pyramid_tiff(
            slides_dir / f"{spec.slide_id}.tiff",
            render.rgb,
            spec.mpp,
            description=f"hwsi synthetic demo slide {spec.slide_id}",
        )
        gt_rows += _write_gt_tiles(render, gt_dir)
        lesions.append(write_lesion_annotation(render, ann_dir))
        del render  # level-0 arrays are large; free before the next slide
        text_rng = _rng(seed, _STREAM_TEXT, i)
        record = build_report(spec.slide_id, spec.label, facts, text_rng)
        records.append(record)
        vqa[split] += build_vqa_items(record, text_rng)
        slide_meta.append(
            {
                "slide_id": spec.slide_id,
                "label": spec.label,
                "split": split,
                "mpp": spec.mpp,
                "width_um": spec.width_um,
                "height_um": spec.height_um,
                "width_px": spec.width_px,
                "height_px": spec.height_px,
                "levels": levels,
            }
        )
        logger.debug(
            "%s: %s, %d x %d px, %d levels",
            spec.slide_id,
            spec.label,
            spec.width_px,
            spec.height_px,
            levels,
        )

    _write_text(outdir / "reports.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    for split, items in vqa.items():
        _write_json(vqa_dir / f"{split}.json", items)
    _write_csv(
        gt_dir / "index.csv",
        ["slide_id", "x", "y", "width", "height", "mpp", "label_path", "n_nuclei"],
        gt_rows,
    )
    write_annotations(ann_dir / "index.csv", lesions)
    _write_json(
        outdir / "cohort.json",
        {
            "schema_version": SCHEMA_VERSION,
            "generator": "hwsi_model.demo",
            "seed": seed,
            "n_slides": n_slides,
            "scale": scale,
            "classes": list(SLIDE_CLASSES),
            "slides": slide_meta,
        },
    )
    samples = outdir / "samples.csv"
    # samples.csv last: its presence marks a complete cohort.
    _write_csv(
        samples,
        ["slide_id", "path", "split", "label", "cohort"],
        [
            [m["slide_id"], f"slides/{m['slide_id']}.tiff", m["split"], m["label"], COHORT_NAME]
            for m in slide_meta
        ],
    )
    logger.info("Demo cohort written: %s", samples)
    return samples
