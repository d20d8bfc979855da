"""Cell scale: StarDist model resolution, training, segmentation, tables and exports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hwsi_model.cells.detect import detect_nuclei
from hwsi_model.cells.model_registry import ModelNotFoundError, resolve_model_folder
from hwsi_model.cells.normalize import slide_percentiles
from hwsi_model.cells.segment import SegmentParams, segment_patches
from hwsi_model.cells.steps import segment_step
from hwsi_model.data.stores.cells import FEATURES, read_cells
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.errors import HwsiError, SlideOpenError, SlideReadError
from hwsi_model.slide.reader import open_slide
from hwsi_model.tiling.steps import tiling_step, tissue_step
from hwsi_model.tiling.tissue import TissueParams

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def model(trained):
    from hwsi_model.cells.model_registry import load_stardist

    return load_stardist(str(trained[0]))[0]


@pytest.fixture(scope="session")
def tiled(cohort, tmp_path_factory) -> tuple[Path, Path, str]:
    """A high-grade 0.5 um/px slide of the cohort, tissue-detected and tiled."""
    import pandas as pd

    sheet = pd.read_csv(cohort / "samples.csv")
    meta = {s["slide_id"]: s for s in json.loads((cohort / "cohort.json").read_text())["slides"]}
    sid = next(
        s for s in sheet.slide_id if meta[s]["label"] == "high_grade" and meta[s]["mpp"] == 0.5
    )
    out = tmp_path_factory.mktemp("tiles")
    slide = cohort / "slides" / f"{sid}.tiff"
    tissue_step(slide, sid, out / "tissue" / sid, TissueParams())
    tiling_step(
        sid, out / "tissue" / sid, out / "tiles" / f"{sid}.zarr", out / "qc.png", region_size=4
    )
    return slide, out / "tiles" / f"{sid}.zarr", sid


def test_trained_model_quality(trained):
    folder, metrics = trained
    assert (folder / "metrics.json").is_file() and (folder / "weights_best.h5").is_file()
    held = metrics["held_out"] or metrics["validation"]
    # The demo's default training (20 x 30 steps) reaches about 0.9; this shorter run less.
    assert held["f1"] >= 0.7, held
    assert held["n_tiles"] > 0


def test_the_nucleus_model_learns_from_training_slides_only(trained, cohort):
    """No held-out slide reaches the StarDist model: it trains on the ground-truth tiles of the
    training split, chooses its thresholds on the validation split, and only reports on the
    test split (issue 14: nothing held out reaches a trained artefact)."""
    import pandas as pd

    _, metrics = trained
    split = dict(pd.read_csv(cohort / "samples.csv")[["slide_id", "split"]].values)
    tiles = pd.read_csv(cohort / "nuclei_gt" / "index.csv")
    per_split = tiles.slide_id.map(split).value_counts().to_dict()
    assert per_split.get("test", 0) > 0  # the check below has something to exclude
    assert metrics["train_tiles"] == per_split["train"]
    if per_split.get("val"):  # without validation slides the last training tiles stand in
        assert metrics["validation"]["n_tiles"] == per_split["val"]
    assert metrics["held_out"]["n_tiles"] == per_split["test"]


def test_training_twice_gives_the_same_model(cohort, tmp_path):
    """Same data and seed, same model: Keras 3 seeds its initialisers from Python's random,
    which the training must seed too (the learning benchmark's two runs once differed)."""
    from hwsi_model.cells.train import TrainParams, train_stardist

    params = TrainParams(epochs=1, steps_per_epoch=2, unet_n_depth=1, unet_n_filter_base=8)
    index, sheet = cohort / "nuclei_gt" / "index.csv", cohort / "samples.csv"
    runs = []
    for k in range(2):
        m = train_stardist(index, sheet, tmp_path / f"m{k}", params)
        m.pop("train_seconds")
        runs.append(m)
    assert runs[0] == runs[1]


def test_unknown_and_uncached_models_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model_folder("2D_versatile_he")
    assert time.perf_counter() - t < 5
    msg = str(exc.value)
    assert str(tmp_path / "keras" / "models" / "StarDist2D" / "2D_versatile_he") in msg
    assert "cells.model" in msg
    with pytest.raises(ModelNotFoundError, match="neither a folder nor a pretrained name"):
        resolve_model_folder("my_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model_folder(str(tmp_path / "empty"))


def test_pretrained_name_found_in_stardist_cache(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / "StarDist2D" / "2D_versatile_he" / "2D_versatile_he"
    shutil.copytree(trained[0], cached)
    assert resolve_model_folder("2D_versatile_he") == cached


def test_blank_patch_has_no_nuclei(model, tiled):
    slide, store, _ = tiled
    tiles, _ = read_tiles(store)
    with open_slide(slide) as reader:
        from hwsi_model.cells.segment import estimate_percentiles

        pct = estimate_percentiles(reader, tiles, SegmentParams())
    blank = np.full((256, 256, 3), 242, np.uint8)
    assert len(detect_nuclei(model, blank, pct, 0.5)) == 0
    # Per-tile percentiles would stretch the blank tile's noise; per-slide ones do not.
    assert slide_percentiles([blank]).hi[0] - slide_percentiles([blank]).lo[0] < 5


def test_patch_alone_or_in_a_block_gives_the_same_nuclei(model, tiled):
    slide, store, _ = tiled
    tiles, _ = read_tiles(store)
    # A patch with nuclei and all 8 neighbours in the grid (the middle of a 3 x 3 window).
    cells = {tuple(rc): i for i, rc in enumerate(tiles.grid.tolist())}
    centres = [
        i
        for (r, c), i in cells.items()
        if all((r + dr, c + dc) in cells for dr in (-1, 0, 1) for dc in (-1, 0, 1))
    ]
    with open_slide(slide) as reader:
        for centre in centres:
            alone, pct, _ = segment_patches(
                reader, model, tiles, [centre], SegmentParams(block=1), progress=False
            )
            if len(alone) > 10:
                break
        r, c = tiles.grid[centre]
        block = [cells[(r + dr, c + dc)] for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        inblock, _, _ = segment_patches(
            reader, model, tiles, block, SegmentParams(block=3), percentiles=pct, progress=False
        )
    mine = inblock.patch_index == centre
    a, b = alone.centroids, inblock.centroids[mine]
    assert len(a) > 10
    dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
    matched = (dist.min(axis=1) < 2.0).mean()
    assert abs(len(a) - len(b)) <= max(1, 0.05 * len(a)) and matched >= 0.95


def test_segment_step_writes_a_consistent_table(trained, tiled, tmp_path):
    slide, store, sid = tiled
    plist = tmp_path / "list.csv"  # as written by select_patches: 3 patches per region
    tiles, _ = read_tiles(store)
    rows = [i for r in range(tiles.n_regions) for i in range(*tiles.region_offsets[r : r + 2])[:3]]
    plist.write_text("patch_index\n" + "\n".join(map(str, rows)) + "\n")
    out = tmp_path / "cells.zarr"
    segment_step(
        slide,
        sid,
        store,
        plist,
        str(trained[0]),
        out,
        tmp_path / "qc.png",
        SegmentParams(block=1),
        geojson=tmp_path / "cells.geojson",
    )
    table, attrs = read_cells(out)
    tiles, _ = read_tiles(store)
    ps0 = tiles.geometry.patch_size_level0
    assert len(table) > 50 and attrs["n_cells"] == len(table)
    assert table.patch_offsets[-1] == len(table) and (np.diff(table.patch_offsets) >= 0).all()
    for p, idx in enumerate(table.patches):
        sl = slice(table.patch_offsets[p], table.patch_offsets[p + 1])
        assert (table.patch_index[sl] == idx).all()
        x, y = tiles.coords[idx]
        cx, cy = table.centroids[sl].T
        assert ((cx >= x) & (cx < x + ps0) & (cy >= y) & (cy < y + ps0)).all()
    assert table.polygons.shape == (len(table), attrs["n_rays"], 2)
    area = table.features[:, FEATURES.index("area_um2")]
    assert 20 < np.median(area) < 200  # demo nuclei are 6-14 um across
    for key in ("model_hash", "prob_thresh", "nms_thresh", "mpp_segmentation", "normalization"):
        assert key in attrs
    gj = json.loads((tmp_path / "cells.geojson").read_text())
    assert len(gj["features"]) == len(table)
    ring = gj["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and gj["features"][0]["properties"]["objectType"] == "detection"
    assert (tmp_path / "qc.png").stat().st_size > 1000


def test_killed_segmentation_leaves_no_table(trained, tiled, tmp_path):
    slide, store, sid = tiled
    out = tmp_path / "cells.zarr"
    code = textwrap.dedent(
        f"""
        import os
        import hwsi_model.data.stores.cells as st
        import zarr
        real = zarr.Group.create_array
        n = []
        def dying(self, *a, **k):
            n.append(1)
            if len(n) == 3:
                os._exit(137)
            return real(self, *a, **k)
        zarr.Group.create_array = dying
        from hwsi_model.cells.segment import SegmentParams
        from hwsi_model.cells.steps import segment_step
        segment_step({str(slide)!r}, {sid!r}, {str(store)!r}, None, {str(trained[0])!r},
                     {str(out)!r}, {str(tmp_path / "qc.png")!r}, SegmentParams(block=4))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert not out.exists() and not (tmp_path / "qc.png").exists()
    with pytest.raises(HwsiError):
        read_cells(out)


def test_corrupt_slide_gives_a_clear_error(trained, tiled, tmp_path):
    slide, store, sid = tiled
    broken = tmp_path / "broken.tiff"
    data = slide.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated after tiling
    with pytest.raises((SlideOpenError, SlideReadError)) as exc:
        segment_step(
            broken,
            sid,
            store,
            None,
            str(trained[0]),
            tmp_path / "c.zarr",
            tmp_path / "qc.png",
            SegmentParams(),
        )
    assert f"slide '{sid}'" in str(exc.value)
    assert not (tmp_path / "c.zarr").exists()


def test_real_he_images(model, slides_dir, tmp_path):
    """Real H&E: the demo model finds nuclei of plausible size (areas in um^2)."""
    from hwsi_model.cells.single_image import segment_input

    histo = slides_dir.parent / "tiles" / "histo.jpg"
    # A model trained on synthetic nuclei is unsure on real tissue: a fixed threshold keeps
    # the check about detection and size, not about where threshold optimisation landed.
    nuc = segment_input(histo, tmp_path / "histo", model, 0.5, mpp=0.5, prob_thresh=0.5)
    area = nuc.features[:, FEATURES.index("area_um2")]
    assert len(nuc) > 5 and 8 < np.median(area) < 150
    assert (tmp_path / "histo" / "histo_nuclei.geojson").is_file()
    assert (tmp_path / "histo" / "histo_nuclei.csv").read_text().startswith("x,y,area_um2")
    region = (256, 512, 1024, 1024)
    cmu = slides_dir / "CMU-1-Small-Region.svs"
    nuc = segment_input(cmu, tmp_path / "cmu", model, 0.5, region=region, prob_thresh=0.5)
    assert len(nuc) > 5
    x, y = nuc.centroids.T  # level-0 px of the slide
    assert ((x >= 256) & (x < 1280) & (y >= 512) & (y < 1536)).all()
    assert 8 < np.median(nuc.features[:, FEATURES.index("area_um2")]) < 150


def test_segment_cli(trained, slides_dir, tmp_path):
    histo = slides_dir.parent / "tiles" / "histo.jpg"
    base = [sys.executable, "-m", "hwsi_model.cli", "segment"]
    args = ["--model", str(trained[0]), "--model-mpp", "0.5", "--out", str(tmp_path)]
    proc = subprocess.run(
        [*base, str(histo), "--mpp", "0.5", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "histo_nuclei.geojson").read_text())["features"]
    slide = slides_dir / "CMU-1-Small-Region.svs"
    proc = subprocess.run([*base, str(slide), *args], capture_output=True, text=True)
    assert proc.returncode == 1 and "--region" in proc.stderr and "Traceback" not in proc.stderr


def _he_images(slides_dir) -> dict[str, np.ndarray]:
    """Real H&E: the StarDist histo.jpg and the densest 256 px crop of the CMU slide (by
    haematoxylin), each also without its haematoxylin (eosin only), and blank glass."""
    from PIL import Image

    from hwsi_model.cells.stain import blank_glass, hematoxylin_density, remove_hematoxylin

    histo = np.asarray(Image.open(slides_dir.parent / "tiles" / "histo.jpg").convert("RGB"))
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as reader:
        w, h = reader.dimensions
        region = reader.read_box(0, 0, w, h, w, h)
    crops = [region[y : y + 256, x : x + 256] for y in range(0, h - 256, 256)
             for x in range(0, w - 256, 256)]  # fmt: skip
    dense = max(crops, key=lambda c: float((hematoxylin_density(c) > 0.08).mean()))
    return {
        "histo": histo,
        "cmu_dense": dense,
        "histo_eosin_only": remove_hematoxylin(histo),
        "cmu_eosin_only": remove_hematoxylin(dense),
        "blank": blank_glass((256, 256, 3)),
    }


def test_eosin_only_tissue_and_glass_hold_no_nuclei(model, slides_dir):
    """The haematoxylin check (cells/detect.py): with per-image contrast stretching the demo
    model finds "nuclei" in eosin-only tissue; none of them passes the check, while nearly
    every detection on nucleus-rich tissue does."""
    from hwsi_model.cells.normalize import image_percentiles
    from hwsi_model.cells.stain import hematoxylin_density

    images = _he_images(slides_dir)
    for name in ("histo_eosin_only", "cmu_eosin_only", "blank"):
        assert np.percentile(hematoxylin_density(images[name]), 99.5) < 0.03, name
    found = {}
    for name, rgb in images.items():
        stretched = slide_percentiles([rgb])  # the worst case: every image stretched to range
        checked = detect_nuclei(model, rgb, stretched, 0.5, prob_thresh=0.5, min_hematoxylin=0.03)
        unchecked = detect_nuclei(model, rgb, stretched, 0.5, prob_thresh=0.5)
        assert len(checked) + checked.rejected == len(unchecked), name
        found[name] = (len(checked), len(unchecked))
    for name in ("histo_eosin_only", "cmu_eosin_only", "blank"):
        assert found[name][0] == 0, found
    for name in ("histo", "cmu_dense"):
        kept, total = found[name]
        assert kept > 10 and kept >= 0.9 * total, found
    # Images without haematoxylin-dark pixels are not stretched at all (hwsi segment).
    for name in ("histo_eosin_only", "blank"):
        pct = image_percentiles(images[name])
        assert pct.lo.tolist() == [0, 0, 0] and pct.hi.tolist() == [255, 255, 255]
    assert image_percentiles(images["histo"]).hi.max() < 255


def test_segmentation_records_the_haematoxylin_check(trained, tiled, tmp_path):
    slide, store, sid = tiled
    out = tmp_path / "cells.zarr"
    strict = SegmentParams(block=4, min_hematoxylin=5.0)  # no nucleus is that dark
    segment_step(slide, sid, store, None, str(trained[0]), out, tmp_path / "qc.png", strict)
    table, attrs = read_cells(out)
    assert len(table) == 0 and attrs["n_rejected_hematoxylin"] > 10
    assert attrs["min_hematoxylin"] == 5.0


def test_demo_training_tiles_get_a_nucleus_free_half(cohort):
    from hwsi_model.cells.stain import hematoxylin_density
    from hwsi_model.cells.train import load_gt_tiles, with_nucleus_free_half

    index, sheet = cohort / "nuclei_gt" / "index.csv", cohort / "samples.csv"
    plain = load_gt_tiles(index, sheet, 0.5)
    mixed = load_gt_tiles(index, sheet, 0.5, nucleus_free=True)
    assert len(plain) == len(mixed)
    for a, b in zip(plain, mixed, strict=True):
        w = a.labels.shape[1]
        if a.split == "test":  # held-out tiles stay as annotated
            assert b.labels.shape == a.labels.shape
            continue
        assert b.labels.shape[1] == 2 * w and (b.labels[:, w:] == 0).all()
        assert (b.labels[:, :w] == a.labels).all() and a.labels.max() > 0
    rgb = np.full((64, 64, 3), (120, 60, 160), np.uint8)  # a haematoxylin-purple patch
    lab = np.ones((64, 64), np.int32)
    for k in (0, 1):
        img, y = with_nucleus_free_half(rgb, lab, k)
        assert img.shape == (64, 128, 3) and y[:, 64:].max() == 0
        assert hematoxylin_density(img[:, 64:]).max() < 0.03 < hematoxylin_density(rgb).min()
