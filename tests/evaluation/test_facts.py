"""Fact-level scores: the parser on hand-written texts (right, wrong, self-contradictory), the
metrics by hand, and the demo generator's own reports read back as their ground truth."""

from __future__ import annotations

import json

import pytest

from hwsi_model.data.text_records import InstructionItem
from hwsi_model.evaluation.facts import (
    fact_results,
    fact_table,
    parse_facts,
    score_text,
    slide_truth,
)
from hwsi_model.evaluation.families import EvalItem
from hwsi_model.evaluation.statistics import StatsSettings, bootstrap_interval

HIGH = {  # a high-grade slide: 62 % lesion in the right half, 3 pieces, large nuclei
    "n_tissue_pieces": 3,
    "lesion_fraction_pct": 62.06,
    "lesion_location": "right",
    "architecture": "sheets",
    "lesion_nuclei_per_0.01mm2": 26.75,
    "lesion_nucleus_diameter_um_mean": 12.87,
    "chromatin": "coarse",
}
RIGHT = (
    "Diagnosis: high-grade carcinoma. There are 3 separate tissue pieces on the slide. About "
    "62% of the tissue area is carcinoma. It lies predominantly in the right half of the "
    "tissue (71% of its area). Tumour cells grow in solid sheets without gland formation. "
    "Lesional nuclei are densely packed, about 27 per 0.01 mm2. The stroma holds sparse "
    "spindle-shaped nuclei. Lesional nuclei are large, with a mean diameter of 12.9 um. "
    "Chromatin is coarse and clumped."
)
# What the demo's model wrote for that slide (issue 14): template-like, and false.
WRONG = (
    "About 2% of the tissue area is carcinoma. It lies predominantly in the lower half of the "
    "tissue. The findings are consistent with low-grade carcinoma."
)


def test_parse_a_right_report() -> None:
    said = parse_facts(RIGHT)
    assert said == {
        "diagnosis": ["high_grade"],
        "tissue_pieces": [3.0],
        "lesion_extent_pct": [62.0],
        "lesion_location": ["right"],
        "architecture": ["sheets"],  # "without gland formation" is not a gland
        "lesion_density": ["dense"],  # the stroma's "sparse" nuclei are not the lesion's
        "lesion_density_n": [27.0],
        "nucleus_size": ["large"],
        "nucleus_diameter_um": [12.9],
        "chromatin": ["coarse"],
    }
    s = score_text(RIGHT, slide_truth(HIGH, "high_grade"))
    assert all(s.stated.values()) and not s.contradicts
    assert s.correct["diagnosis"] and s.correct["tissue_pieces"] and s.correct["chromatin"]
    assert s.abs_error["lesion_extent_pct"] == pytest.approx(0.06)


def test_a_wrong_and_a_self_contradictory_text() -> None:
    truth = slide_truth(HIGH, "high_grade")
    s = score_text(WRONG, truth)
    assert s.contradicts
    assert s.stated["diagnosis"] and not s.correct["diagnosis"]
    assert s.stated["lesion_location"] and not s.correct["lesion_location"]
    assert s.abs_error["lesion_extent_pct"] == pytest.approx(60.06)
    assert not s.stated["chromatin"] and not s.stated["nucleus_size"]

    both = "Low-grade carcinoma. The lesion is a high-grade carcinoma."
    assert parse_facts(both)["diagnosis"] == ["low_grade", "high_grade"]
    s = score_text(both, truth)
    assert s.stated["diagnosis"] and not s.correct["diagnosis"] and s.contradicts

    # "slightly coarse chromatin" is one value, not also "coarse"
    assert parse_facts("Small round nuclei with slightly coarse chromatin.") == {
        "nucleus_size": ["small"],
        "chromatin": ["slightly coarse"],
    }
    assert parse_facts("The stroma is collagenous.") == {}


def test_fact_table_metrics_by_hand() -> None:
    truth = slide_truth(HIGH, "high_grade")
    texts = {"s1": RIGHT, "s2": WRONG, "s3": "Nothing to report."}
    scores = [score_text(t, truth) for t in texts.values()]
    t = fact_table(list(texts), scores)
    m = t.point()
    # category facts: RIGHT states 6 of 6 right; WRONG states 2, both wrong; s3 none
    assert m["fact_accuracy"] == pytest.approx(6 / 8)
    assert m["fact_recall"] == pytest.approx(6 / 18)  # every slide fact expected (no reference)
    assert m["contradiction_rate"] == pytest.approx(1 / 3)
    assert m["diagnosis_accuracy"] == pytest.approx(1 / 2)
    assert m["lesion_extent_pct_mae"] == pytest.approx((0.06 + 60.06) / 2)
    assert m["tissue_pieces_accuracy"] == 1.0
    assert m["cell_accuracy"] == 1.0 and m["region_accuracy"] == pytest.approx(1 / 2)
    lo, hi = bootstrap_interval(t, "contradiction_rate", StatsSettings(n_resamples=200))
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0


def test_fact_results_expect_what_the_reference_states() -> None:
    truth = slide_truth(HIGH, "high_grade")

    def item(sid: str, reference: str) -> EvalItem:
        it = InstructionItem(
            slide_id=sid, question="What do the nuclei look like?", answer=reference
        )
        return EvalItem(item=it, family="open_question", benchmark="demo")

    ref = "Lesional nuclei are large. Chromatin is coarse."
    items = [item("a", ref), item("b", ref)]
    answers = {
        "m": ["Large nuclei with coarse chromatin.", "Small nuclei. Chromatin is coarse."],
        "base": ["Nuclei.", "Nuclei."],
        "absent": ["", ""],
    }
    out = fact_results(
        items, answers, {"a": truth, "b": truth}, "m", StatsSettings(n_resamples=200),
        families={"m": {"open_question"}, "base": {"open_question"}, "absent": set()},
    )  # fmt: skip
    r = out["open_question"]
    assert r["n"] == 2 and r["n_slides"] == 2 and set(r["models"]) == {"m", "base"}
    m = r["models"]["m"]["metrics"]
    assert m["fact_recall"] == pytest.approx(3 / 4)  # size and chromatin asked, per item
    assert m["fact_accuracy"] == pytest.approx(3 / 4)
    assert r["models"]["base"]["metrics"]["fact_accuracy"] is None  # nothing stated
    assert r["models"]["base"]["metrics"]["fact_recall"] == 0.0
    assert r["paired"]["base"]["fact_recall"]["difference"] == pytest.approx(3 / 4)
    assert "fact_accuracy" not in r["paired"]["base"]  # no difference with nothing stated


def test_the_generators_reports_read_back_as_their_ground_truth(cohort) -> None:
    n = 0
    for line in (cohort / "reports.jsonl").read_text().splitlines():
        r = json.loads(line)
        truth = slide_truth(r["facts"], r["label"])
        s = score_text(r["report"], truth)
        assert not s.contradicts, r["slide_id"]
        categories = [k for k in truth if k not in s.abs_error]
        assert all(s.correct[k] for k in categories), (r["slide_id"], parse_facts(r["report"]))
        # the text rounds: to 1 % of the area, 1 nucleus per 0.01 mm2, 0.1 um
        assert all(e <= 0.5 + 1e-9 for e in s.abs_error.values()), s.abs_error
        assert s.correct["tissue_pieces"]
        n += 1
    assert n == 6


def test_the_inflammatory_focus_read_right_wrong_and_contradictory() -> None:
    """The region-scale focus: present / absent and where, never confused with the lesion's
    location (the focus is said to lie "towards the top/bottom", the lesion in a half)."""
    truth = slide_truth(
        HIGH | {"inflammation_focus": True, "focus_location": "lower"}, "high_grade"
    )
    right = (
        "It lies predominantly in the right half of the tissue. A focus of dense lymphocytic "
        "inflammation, about 90 um across, lies in the stroma towards the bottom of the tissue."
    )
    s = score_text(right, truth)
    assert s.correct["inflammation_focus"] and s.correct["focus_location"]
    assert s.correct["lesion_location"] and not s.contradicts

    wrong = "The stroma towards the top of the tissue holds a focus of lymphocytic inflammation."
    s = score_text(wrong, truth)
    assert s.correct["inflammation_focus"] and not s.correct["focus_location"] and s.contradicts

    missed = score_text("No inflammatory focus is seen.", truth)
    assert missed.stated["inflammation_focus"] and not missed.correct["inflammation_focus"]
    assert not missed.stated["focus_location"]

    both = "A focus of inflammation lies towards the top. There is no focus of inflammation."
    assert parse_facts(both)["inflammation_focus"] == ["present", "absent"]
    assert score_text(both, truth).contradicts

    none = slide_truth(HIGH | {"inflammation_focus": False, "focus_location": None}, "high_grade")
    s = score_text("There is no focus of inflammation.", none)
    assert s.correct["inflammation_focus"] and not s.contradicts
