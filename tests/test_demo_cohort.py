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
from hwsi_model.demo.reports import DIAGNOSIS_NAMES, ENLARGED_NUCLEUS_UM, LETTERS

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


def test_gt_nucleus_area_follows_the_planned_size_not_the_class(cohort: Path) -> None:
    plan = {m["slide_id"]: m["plan"] for m in _meta(cohort)["slides"]}
    areas: dict[bool, list[float]] = {True: [], False: []}
    for row in _gt_index(cohort):
        mask = tifffile.imread(cohort / row["label_path"])
        counts = np.bincount(mask.ravel())[1:]
        enlarged = plan[row["slide_id"]]["nucleus_diameter_um"] > ENLARGED_NUCLEUS_UM
        areas[enlarged] += list(counts * float(row["mpp"]) ** 2)
    assert np.mean(areas[True]) > 1.5 * np.mean(areas[False])


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
    plans = {m["slide_id"]: m["plan"] for m in _meta(cohort)["slides"]}
    for rec in records:
        f, plan = rec["facts"], plans[rec["slide_id"]]
        assert rec["fact_scales"]["diagnosis"] == "slide"
        assert set(rec["fact_scales"]) == {"diagnosis", *f}
        assert set(rec["fact_scales"].values()) == {"slide", "region", "patch", "cell"}
        # The measured facts follow the plan (the plan varies within a class).
        assert f["n_tissue_pieces"] == plan["n_pieces"]
        assert f["lesion_fraction_pct"] == pytest.approx(100 * plan["lesion_fraction"], abs=4)
        assert f["lesion_nucleus_diameter_um_mean"] == pytest.approx(
            plan["nucleus_diameter_um"], abs=1.0
        )
        assert f["inflammation_focus"] == (plan["focus"] is not None)
        assert f["focus_location"] == plan["focus"]
        region = " ".join(rec["sentences"]["region"])
        assert ("towards the" in region) == f["inflammation_focus"]
    by_class = {c: [r["facts"] for r in records if r["label"] == c] for c in SLIDE_CLASSES}
    for facts in by_class.values():  # two slides per class: one of each answer
        assert {f["lesion_fraction_pct"] > 50 for f in facts} == {True, False}
        assert {f["lesion_nucleus_diameter_um_mean"] > ENLARGED_NUCLEUS_UM for f in facts} == {
            True,
            False,
        }
        assert {f["inflammation_focus"] for f in facts} == {True, False}


def test_planned_answers_are_balanced_within_every_class() -> None:
    from hwsi_model.demo.cohort import plan_slides

    specs = plan_slides(48, SEED, SCALE)
    for cls in SLIDE_CLASSES:
        mine = [s for s in specs if s.label == cls]
        assert len(mine) == 16
        assert Counter(s.lesion_fraction > 0.5 for s in mine) == {True: 8, False: 8}
        assert Counter(s.lesion_side for s in mine) == {"left": 8, "right": 8}
        assert Counter(s.nucleus_diameter_um > ENLARGED_NUCLEUS_UM for s in mine) == {
            True: 8,
            False: 8,
        }
        assert Counter(s.focus for s in mine) == {None: 8, "upper": 4, "lower": 4}
        assert sorted(Counter(s.n_pieces for s in mine).values()) == [5, 5, 6]
        # Not a function of the class: every class spans both sides of every threshold, and
        # the extents of the classes overlap.
        assert (
            min(s.lesion_fraction for s in mine)
            < 0.44
            < 0.56
            < max(s.lesion_fraction for s in mine)
        )


def test_vqa_items(cohort: Path) -> None:
    samples = {r["slide_id"]: r for r in _samples(cohort)}
    report = {r["slide_id"]: r["report"] for r in _reports(cohort)}
    seen: Counter[str] = Counter()
    answers: dict[str, Counter[str]] = {}
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
                answers.setdefault(it["fact"], Counter())[chosen] += 1
            else:
                assert it["question_type"] == "open" and "options" not in it
                if it["task"] == "report":
                    assert gpt["value"] == report[sid]
            assert it["scale"] in {"slide", "region", "patch", "cell", "mixed"} and it["fact"]
    assert set(seen) == set(samples)
    assert set(answers) == {
        "diagnosis", "tissue_pieces", "lesion_extent", "lesion_side", "inflammation_focus",
        "focus_location", "nuclei_enlarged",
    }  # fmt: skip
    for fact in ("lesion_extent", "inflammation_focus", "nuclei_enlarged"):
        assert answers[fact] == {"Yes": 3, "No": 3}, fact


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


def test_focus_annotations_hold_the_focus(cohort: Path) -> None:
    """inflammation.csv lists the slides with a focus; their masks hold its lymphocytes."""
    from hwsi_model.data.annotations import read_annotations
    from hwsi_model.demo.cohort import _STREAM_RENDER, _rng, plan_slides
    from hwsi_model.demo.synthetic_tissue import NUC_LYMPHOCYTE, render_slide

    foci = read_annotations(cohort / "annotations" / "inflammation.csv")
    specs = plan_slides(N_SLIDES, SEED, SCALE)
    assert sorted(foci) == [s.slide_id for s in specs if s.focus is not None]
    i, spec = next((n, s) for n, s in enumerate(specs) if s.focus is not None)
    nuc = render_slide(spec, _rng(SEED, _STREAM_RENDER, i)).nuclei
    lym = nuc["type"] == NUC_LYMPHOCYTE
    assert lym.sum() > 20
    ps = 8  # a small box around each nucleus centre
    boxes = np.stack([nuc["cx"] - ps / 2, nuc["cy"] - ps / 2], 1).astype(int)
    inside = foci[spec.slide_id].fraction_inside(boxes, ps, spec.mpp)
    assert foci[spec.slide_id].label == "inflammation"
    assert inside[lym].mean() > 0.9
    assert inside[~lym].mean() < 0.2


class _FixedBlock:
    """A generator whose ``uniform`` (the lesion field's block size) returns ``block``."""

    def __init__(self, block: float) -> None:
        self.block, self.rng = block, np.random.default_rng(0)

    def uniform(self, *args, **kwargs):
        return self.block

    def __getattr__(self, name: str):
        return getattr(self.rng, name)


def test_lesion_field_where_the_last_coarse_cell_passes_a_block_edge() -> None:
    """A slide 1,001 um high has its last 4-um coarse centre at 1,002 um: past the edge, and
    in the fourth 333.8-um block where the slide ends in the third (seed 2 of the learning
    benchmark's cohort crashed here with an IndexError)."""
    from hwsi_model.demo.synthetic_tissue import SlideSpec, lesion_field

    spec = SlideSpec("s", "high_grade", 0.5, width_um=1001, height_um=1001)
    tissue = np.ones((251, 251), np.float32)
    field = lesion_field(spec, tissue, 0.3, _FixedBlock(333.8))
    assert field.shape == (251, 251)
    assert abs(float((field > 0).mean()) - 0.3) < 0.01
