"""Synthetic demo cohort: slides open in OpenSlide, outputs are consistent and deterministic.

Cohorts are generated small (scale 0.4, i.e. about 0.4-0.6 mm per side) to keep this quick.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from hwsi_model.demo import SLIDE_CLASSES, generate_demo_cohort
from hwsi_model.demo.pyramid_tiff import pyramid_levels
from hwsi_model.demo.reports import DIAGNOSIS_NAMES, LETTERS

SCALE = 0.4
N_SLIDES = 6
SEED = 0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_cohort")
    samples = generate_demo_cohort(out, n_slides=N_SLIDES, seed=SEED, scale=SCALE, progress=False)
    assert samples == out / "samples.csv"
    return out


def _samples(root: Path) -> list[dict[str, str]]:
    with open(root / "samples.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _meta(root: Path) -> dict:
    return json.loads((root / "cohort.json").read_text())


def _reports(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "reports.jsonl").read_text().splitlines()]


def _gt_index(root: Path) -> list[dict[str, str]]:
    with open(root / "nuclei_gt" / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_samples_csv(cohort: Path) -> None:
    rows = _samples(cohort)
    assert list(rows[0]) == ["slide_id", "path", "split", "label", "cohort"]
    ids = [r["slide_id"] for r in rows]
    assert ids == [f"demo_{i:03d}" for i in range(N_SLIDES)]
    for r in rows:
        assert not Path(r["path"]).is_absolute()
        assert (cohort / r["path"]).is_file()
        assert r["cohort"] == "demo"
        assert r["split"] in {"train", "val", "test"}
    assert Counter(r["label"] for r in rows) == {c: N_SLIDES // 3 for c in SLIDE_CLASSES}
    assert {"train", "test"} <= {r["split"] for r in rows}
    assert {r["label"] for r in rows if r["split"] == "train"} == set(SLIDE_CLASSES)
    meta = _meta(cohort)
    assert (meta["seed"], meta["n_slides"], meta["scale"]) == (SEED, N_SLIDES, SCALE)
    assert meta["schema_version"]
    # Nothing half-written is left behind.
    assert not [p for p in cohort.rglob(".*")]


def test_slides_open_in_openslide(cohort: Path) -> None:
    slides = _meta(cohort)["slides"]
    for m in slides:
        with openslide.OpenSlide(cohort / "slides" / f"{m['slide_id']}.tiff") as s:
            assert s.properties["openslide.vendor"] == "generic-tiff"
            assert s.level_count >= 2
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(m["mpp"])
            assert float(s.properties["openslide.mpp-y"]) == pytest.approx(m["mpp"])
            assert s.dimensions == (m["width_px"], m["height_px"])
            for k, ds in enumerate(s.level_downsamples):
                assert ds == pytest.approx(2**k, rel=0.01)
            thumb = np.asarray(s.get_thumbnail((256, 256)).convert("L"), dtype=float)
        # Physical size (um) is independent of the scan resolution.
        w_um, h_um = m["width_px"] * m["mpp"], m["height_px"] * m["mpp"]
        assert 1000 * SCALE - 1 <= w_um <= 1500 * SCALE + 1
        assert 800 * SCALE - 1 <= h_um <= 1300 * SCALE + 1
        # White background with darker tissue.
        assert np.median(thumb) > 225 and thumb.min() < 180
    mpps = {m["mpp"] for m in slides}
    assert mpps == {0.25, 0.5}
    assert len({m["label"] for m in slides if m["mpp"] == 0.25}) >= 2


def test_default_size_has_three_levels() -> None:
    levels = pyramid_levels(np.zeros((2000, 2600, 3), dtype=np.uint8))
    assert len(levels) >= 3
    assert [lv.shape[:2] for lv in levels[:3]] == [(2000, 2600), (1000, 1300), (500, 650)]


def test_deterministic_and_prefix_stable(cohort: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    generate_demo_cohort(again, n_slides=3, seed=SEED, scale=SCALE, progress=False)
    generate_demo_cohort(other, n_slides=3, seed=SEED + 1, scale=SCALE, progress=False)
    for i in range(3):
        name = f"slides/demo_{i:03d}.tiff"
        assert (again / name).read_bytes() == (cohort / name).read_bytes()
    assert _reports(again) == _reports(cohort)[:3]
    first = {r["label_path"] for r in _gt_index(again)}
    assert first == {r["label_path"] for r in _gt_index(cohort) if int(r["slide_id"][-3:]) < 3}
    for rel in first:
        assert (again / rel).read_bytes() == (cohort / rel).read_bytes()
    assert (other / "slides/demo_000.tiff").read_bytes() != (
        cohort / "slides/demo_000.tiff"
    ).read_bytes()
    assert _reports(other) != _reports(cohort)[:3]


def test_gt_nucleus_area_follows_class(cohort: Path) -> None:
    labels = {r["slide_id"]: r["label"] for r in _samples(cohort)}
    areas: dict[str, list[float]] = {c: [] for c in SLIDE_CLASSES}
    for row in _gt_index(cohort):
        mask = tifffile.imread(cohort / row["label_path"])
        counts = np.bincount(mask.ravel())[1:]
        areas[labels[row["slide_id"]]] += list(counts * float(row["mpp"]) ** 2)
    mean = {c: np.mean(a) for c, a in areas.items()}
    assert mean["high_grade"] > 2 * mean["benign"]
    assert mean["benign"] < mean["low_grade"] < mean["high_grade"]


def test_gt_masks_align_with_slide(cohort: Path) -> None:
    rows = _gt_index(cohort)
    assert {r["slide_id"] for r in rows} == {f"demo_{i:03d}" for i in range(N_SLIDES)}
    for row in rows:
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        mask = tifffile.imread(cohort / row["label_path"])
        assert mask.dtype == np.uint16 and mask.shape == (h, w)
        n = int(row["n_nuclei"])
        assert n > 0 and set(np.unique(mask)) == set(range(n + 1))
        with openslide.OpenSlide(cohort / "slides" / f"{row['slide_id']}.tiff") as s:
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(float(row["mpp"]))
            tile = np.asarray(s.read_region((x, y), 0, (w, h)).convert("L"), dtype=float)
        assert tile[mask > 0].mean() < tile[mask == 0].mean() - 30


def test_reports(cohort: Path) -> None:
    records = _reports(cohort)
    labels = {r["slide_id"]: r["label"] for r in _samples(cohort)}
    assert [r["slide_id"] for r in records] == list(labels)
    for rec in records:
        assert rec["label"] == labels[rec["slide_id"]]
        assert set(rec["sentences"]) == {"slide", "region", "patch", "cell"}
        assert all(rec["sentences"][k] for k in rec["sentences"])
        joined = " ".join(
            s for k in ("slide", "region", "patch", "cell") for s in rec["sentences"][k]
        )
        assert rec["report"] == joined
        assert DIAGNOSIS_NAMES[rec["label"]].lower() in rec["sentences"]["slide"][0]
        assert rec["key_terms"] and "spindle-shaped nuclei" in rec["key_terms"]
        f = rec["facts"]
        assert 1 <= f["n_tissue_pieces"] <= 3
        assert f"{f['lesion_fraction_pct']:.0f}%" in " ".join(rec["sentences"]["region"])
        if rec["label"] == "high_grade":
            assert "pleomorphic" in rec["key_terms"]
    by_class = {c: [r["facts"] for r in records if r["label"] == c] for c in SLIDE_CLASSES}
    lesion = {c: np.mean([f["lesion_fraction_pct"] for f in v]) for c, v in by_class.items()}
    assert lesion["benign"] < lesion["low_grade"] < lesion["high_grade"]
    diam = {
        c: np.mean([f["lesion_nucleus_diameter_um_mean"] for f in v]) for c, v in by_class.items()
    }
    assert 5.5 < diam["benign"] < 7.5 < diam["low_grade"] < 10.5 < diam["high_grade"] < 15


def test_vqa_items(cohort: Path) -> None:
    samples = {r["slide_id"]: r for r in _samples(cohort)}
    report = {r["slide_id"]: r["report"] for r in _reports(cohort)}
    seen: Counter[str] = Counter()
    density_answers = set()
    for split in ("train", "val", "test"):
        items = json.loads((cohort / "vqa" / f"{split}.json").read_text())
        for it in items:
            sid = it["slide_id"]
            assert samples[sid]["split"] == split
            seen[sid] += 1
            assert it["image"] == f"{sid}.tiff" and it["id"].startswith(f"{sid}_q")
            human, gpt = it["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<image>\n")
            assert gpt["from"] == "gpt" and gpt["value"]
            assert it["task"] in {"diagnosis", "morphology", "report"}
            if it["question_type"] == "closed":
                assert LETTERS.index(it["answer"]) < len(it["options"])
                assert gpt["value"].startswith(f"{it['answer']}) ")
                chosen = it["options"][LETTERS.index(it["answer"])]
                if it["task"] == "diagnosis":
                    assert sorted(it["options"]) == sorted(DIAGNOSIS_NAMES.values())
                    assert chosen == DIAGNOSIS_NAMES[samples[sid]["label"]]
                if "densely packed" in human["value"]:
                    density_answers.add(chosen)
            else:
                assert it["question_type"] == "open" and "options" not in it
                if it["task"] == "report":
                    assert gpt["value"] == report[sid]
    assert set(seen) == set(samples)
    assert density_answers == {"Yes", "No"}


@pytest.mark.parametrize(
    ("n_slides", "scale"), [(2, 1.0), (0, 1.0), (3, 0.0), (3, -1.0), (3, float("nan"))]
)
def test_bad_arguments(tmp_path: Path, n_slides: int, scale: float) -> None:
    with pytest.raises(ValueError):
        generate_demo_cohort(tmp_path / "x", n_slides=n_slides, scale=scale, progress=False)
    assert not (tmp_path / "x").exists()


def test_lesion_annotations_match_the_rendered_lesion(cohort: Path) -> None:
    """The annotation masks say where the generator painted the lesion, patch by patch."""
    from hwsi_model.data.annotations import read_annotations
    from hwsi_model.demo.cohort import _STREAM_RENDER, _rng, plan_slides
    from hwsi_model.demo.synthetic_tissue import LESION_CODES, render_slide

    annotations = read_annotations(cohort / "annotations" / "index.csv")
    assert sorted(annotations) == [f"demo_{i:03d}" for i in range(N_SLIDES)]
    specs = plan_slides(N_SLIDES, SEED, SCALE)
    i = next(n for n, s in enumerate(specs) if s.label == "high_grade")  # a large lesion
    spec = specs[i]
    ann = annotations[spec.slide_id]
    assert ann.label == "lesion" and ann.um_per_px == pytest.approx(2.0)
    gt = np.isin(render_slide(spec, _rng(SEED, _STREAM_RENDER, i)).code, LESION_CODES)
    ps = 32
    ys, xs = np.mgrid[0 : gt.shape[0] - ps + 1 : ps, 0 : gt.shape[1] - ps + 1 : ps]
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    frac = ann.fraction_inside(coords, ps, spec.mpp)
    truth = np.array([gt[y : y + ps, x : x + ps].mean() for x, y in coords])
    assert truth.mean() > 0.1
    assert np.abs(frac - truth).mean() < 0.02
    assert ((frac >= 0.5) == (truth >= 0.5)).mean() > 0.98


def test_hwsi_demo_command_writes_a_cohort(tmp_path: Path) -> None:
    from hwsi_model.demo.__main__ import main

    assert main(["cohort", str(tmp_path / "c"), "--n-slides", "3", "--scale", "0.3"]) == 0
    assert (tmp_path / "c" / "samples.csv").is_file()
    assert (tmp_path / "c" / "annotations" / "index.csv").is_file()
    assert main(["cohort", str(tmp_path / "d"), "--n-slides", "1"]) == 1  # too few: an error
