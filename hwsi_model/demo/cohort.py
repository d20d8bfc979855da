"""Generate a small, deterministic synthetic whole-slide-image cohort.

Layout under ``outdir``::

    samples.csv             slide_id,path,split,label,cohort (path relative to outdir)
    slides/{slide_id}.tiff  pyramidal tiled JPEG TIFF (OpenSlide generic-tiff)
    reports.jsonl           one report record per slide (see reports.build_report)
    vqa/{split}.json        WSI-Bench / LLaVA style question-answer items
    nuclei_gt/              uint16 instance masks of 256x256 level-0 tiles + index.csv
    annotations/            where the lesion is: one PNG mask per slide + index.csv
                            (hwsi_model.data.annotations), for measuring the evidence maps;
                            inflammation.csv + masks: the inflammatory foci (slides with one)
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
from itertools import zip_longest
from pathlib import Path

import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from hwsi_model.atomic import atomic_output
from hwsi_model.data.annotations import MaskAnnotation, write_annotations, write_mask

from .pyramid_tiff import write_pyramid_tiff
from .reports import ENLARGED_NUCLEUS_UM, build_report, build_vqa_items
from .synthetic_tissue import (
    CLASS_STYLES,
    LESION_CODES,
    NUC_EPITHELIAL,
    SLIDE_CLASSES,
    SlideRender,
    SlideSpec,
    measure_slide,
    render_slide,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "hwsi-demo-cohort/2"
COHORT_NAME = "demo"
SPLITS = ("train", "val", "test")
GT_TILE_PX = 256
GT_TILES_PER_SLIDE = 3
HIGH_RES_MPP, DEFAULT_MPP = 0.25, 0.5
#: Resolution of the lesion masks (about; an integer number of level-0 pixels per mask pixel).
ANNOTATION_UM = 2.0
# Planned mean lesional nucleus diameters keep clear of reports.ENLARGED_NUCLEUS_UM (9 um).
_DIAMETER_BINS_UM = {False: (6.4, 7.8), True: (10.2, 12.4)}
_EXTENT_BINS = {False: 0.44, True: 0.56}  # lesion fraction below / above one half
# Random streams: (seed, stream, index) keeps draws for different purposes independent.
(
    _STREAM_RENDER,
    _STREAM_CLASS,
    _STREAM_TEXT,
    _STREAM_SIZE,
    _STREAM_SPLIT,
    _STREAM_FACTS,
    _STREAM_BALANCE,
) = range(7)


# ----------------------------------------------------------------------------- planning


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _balanced(seed: int, fact: int, class_index: int, k: int, options: tuple) -> object:
    """The ``k``-th slide of a class's value of a planned fact: every complete block of
    ``len(options)`` slides of the class takes each option once, in a seeded order."""
    block, pos = divmod(k, len(options))
    order = np.random.default_rng([seed, _STREAM_BALANCE, fact, class_index, block]).permutation(
        len(options)
    )
    return options[int(order[pos])]


def plan_slides(n_slides: int, seed: int, scale: float) -> list[SlideSpec]:
    """Class, resolution, physical size and planned facts of every slide.

    Classes are balanced by shuffling ``SLIDE_CLASSES`` within consecutive groups of three
    slides. The 2nd, 10th, ... slide of each class is scanned at 0.25 um/px, the rest at
    0.5 um/px. Size is 1000-1500 x 800-1300 um times ``scale`` (rounded to whole um).

    The facts the closed questions ask about are balanced within every class (each complete
    block of a class's slides takes every answer once), so no answer follows from the class:
    lesion extent below or above half of the tissue (drawn from the class's overlapping
    range), the side the lesion grows from (left/right), 1-3 tissue pieces, lesional nuclei
    enlarged or not (mean diameter clear of :data:`ENLARGED_NUCLEUS_UM`), and a focus of
    inflammation (none, or in the upper or lower half: half the slides have one).
    """
    specs, seen = [], {c: 0 for c in SLIDE_CLASSES}
    focus_seen = dict(seen)
    for i in range(n_slides):
        perm = _rng(seed, _STREAM_CLASS, i // 3).permutation(len(SLIDE_CLASSES))
        ci = int(perm[i % 3])
        label = SLIDE_CLASSES[ci]
        k = seen[label]
        mpp = HIGH_RES_MPP if k % 8 == 1 else DEFAULT_MPP
        seen[label] += 1
        size_rng = _rng(seed, _STREAM_SIZE, i)
        width = max(round(size_rng.uniform(1000, 1500) * scale), 100)
        height = max(round(size_rng.uniform(800, 1300) * scale), 100)
        fact_rng = _rng(seed, _STREAM_FACTS, i)
        lo, hi = CLASS_STYLES[label].lesion_fraction
        above = _balanced(seed, 0, ci, k, (False, True))
        extent = (
            fact_rng.uniform(_EXTENT_BINS[True], hi)
            if above
            else fact_rng.uniform(lo, _EXTENT_BINS[False])
        )
        enlarged = _balanced(seed, 3, ci, k, (False, True))
        focus = None
        if _balanced(seed, 4, ci, k, (False, True)):
            focus = _balanced(seed, 5, ci, focus_seen[label], ("upper", "lower"))
            focus_seen[label] += 1
        specs.append(
            SlideSpec(
                f"demo_{i:03d}",
                label,
                mpp,
                width,
                height,
                n_pieces=_balanced(seed, 2, ci, k, (1, 2, 3)),
                lesion_fraction=round(float(extent), 3),
                lesion_side=_balanced(seed, 1, ci, k, ("left", "right")),
                nucleus_diameter_um=round(float(fact_rng.uniform(*_DIAMETER_BINS_UM[enlarged])), 2),
                focus=focus,
            )
        )
    return specs


def assign_splits(
    labels: list[str],
    seed: int,
    test_fraction: float = 0.25,
    val_fraction: float = 0.125,
    strata: list[bool] | None = None,
) -> list[str]:
    """Stratified train/val/test split: per class ``test_fraction`` test, ``val_fraction``
    val (rounded), >= 1 train.

    With the defaults, 8 slides of a class give 5 train, 1 val, 2 test. ``strata`` (one bool
    per slide, e.g. nuclei enlarged) is balanced too: within a class the slides are taken
    alternately from its two strata (starting with the class index's parity), so even a
    six-slide cohort does not train only on one kind. Deterministic given seed.
    """
    splits = [""] * len(labels)
    for ci, cls in enumerate(SLIDE_CLASSES):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        m = len(idx)
        n_test, n_val = int(m * test_fraction + 0.5), int(m * val_fraction + 0.5)
        while m - n_test - n_val < 1 and n_test + n_val > 0:
            if n_val:
                n_val -= 1
            else:
                n_test -= 1
        order = [int(j) for j in _rng(seed, _STREAM_SPLIT, ci).permutation(m)]
        if strata is not None:
            groups = [
                [j for j in order if bool(strata[idx[j]]) == g] for g in (ci % 2 == 1, ci % 2 == 0)
            ]
            order = [j for pair in zip_longest(*groups) for j in pair if j is not None]
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


def _write_region_mask(
    render: SlideRender, region: np.ndarray, ann_dir: Path, label: str
) -> MaskAnnotation:
    """Write a level-0 bool ``region`` as ``ann_dir/<slide>_<label>.png``, block majority at
    about :data:`ANNOTATION_UM` um/px."""
    spec = render.spec
    f = max(1, round(ANNOTATION_UM / spec.mpp))
    h, w = math.ceil(region.shape[0] / f), math.ceil(region.shape[1] / f)
    padded = np.zeros((h * f, w * f), dtype=np.float32)
    padded[: region.shape[0], : region.shape[1]] = region
    mask = padded.reshape(h, f, w, f).mean((1, 3)) >= 0.5
    path = write_mask(ann_dir / f"{spec.slide_id}_{label}.png", mask)
    return MaskAnnotation(spec.slide_id, path, f * spec.mpp, label)


def write_lesion_annotation(render: SlideRender, ann_dir: Path) -> MaskAnnotation:
    """Write where the lesion is (lesional compartments of the code map) as
    ``ann_dir/<slide>_lesion.png``."""
    return _write_region_mask(render, np.isin(render.code, LESION_CODES), ann_dir, "lesion")


def write_focus_annotation(render: SlideRender, ann_dir: Path) -> MaskAnnotation:
    """Write where the inflammatory focus is (its disc, within the tissue) as
    ``ann_dir/<slide>_inflammation.png``; the render must have a focus."""
    assert render.focus is not None
    cy, cx, radius = render.focus
    mpp = render.spec.mpp
    yy = (np.arange(render.code.shape[0]) + 0.5)[:, None] * mpp
    xx = (np.arange(render.code.shape[1]) + 0.5)[None, :] * mpp
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return _write_region_mask(render, disc & (render.code != 0), ann_dir, "inflammation")


# ----------------------------------------------------------------------------- main


def _validate(
    n_slides: int, seed: int, scale: float, test_fraction: float, val_fraction: float
) -> None:
    for name, v in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    if test_fraction + val_fraction >= 1:
        raise ValueError("test_fraction + val_fraction must leave slides for training")
    if isinstance(n_slides, bool) or not isinstance(n_slides, (int, np.integer)) or n_slides < 3:
        raise ValueError(f"n_slides must be an integer >= 3 (one per class), got {n_slides!r}")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def generate_demo_cohort(
    outdir: Path,
    n_slides: int = 24,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = True,
    test_fraction: float = 0.25,
    val_fraction: float = 0.125,
) -> Path:
    """Generate the synthetic demo cohort under ``outdir`` and return the samples.csv path.

    ``n_slides`` (>= 3) slides, classes balanced over ``SLIDE_CLASSES``; ``scale``
    multiplies the linear physical size (default about 1.0-1.5 x 0.8-1.3 mm, i.e. about
    2000-3000 level-0 px per side at 0.5 um/px). ``test_fraction`` / ``val_fraction``: of
    each class's slides (see :func:`assign_splits`). Raises ValueError for bad arguments.
    """
    _validate(n_slides, seed, scale, test_fraction, val_fraction)
    outdir = Path(outdir)
    slides_dir, gt_dir, vqa_dir = outdir / "slides", outdir / "nuclei_gt", outdir / "vqa"
    ann_dir = outdir / "annotations"
    for d in (slides_dir, gt_dir, vqa_dir, ann_dir):
        d.mkdir(parents=True, exist_ok=True)

    specs = plan_slides(n_slides, seed, scale)
    splits = assign_splits(
        [s.label for s in specs],
        seed,
        test_fraction,
        val_fraction,
        strata=[(s.nucleus_diameter_um or 0) > ENLARGED_NUCLEUS_UM for s in specs],
    )
    logger.info(
        "Generating %d demo slides (seed=%d, scale=%g) in %s", n_slides, seed, scale, outdir
    )

    records, gt_rows, slide_meta, lesions, foci = [], [], [], [], []
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
        if render.focus is not None:
            foci.append(write_focus_annotation(render, ann_dir))
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
                "plan": {
                    "n_pieces": spec.n_pieces,
                    "lesion_fraction": spec.lesion_fraction,
                    "lesion_side": spec.lesion_side,
                    "nucleus_diameter_um": spec.nucleus_diameter_um,
                    "focus": spec.focus,
                },
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
    write_annotations(ann_dir / "inflammation.csv", foci)
    _write_json(
        outdir / "cohort.json",
        {
            "schema_version": SCHEMA_VERSION,
            "generator": "hwsi_model.demo",
            "seed": seed,
            "n_slides": n_slides,
            "scale": scale,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
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
