"""Intervals and paired tests over slides, corpus BLEU from summed counts, the per-item tables
against the family metrics, task groups, and the majority-answer baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwsi_model.evaluation import metrics
from hwsi_model.evaluation.families import read_test_set, score_items, score_items_and_tables
from hwsi_model.evaluation.majority import fit_majority, question_stem
from hwsi_model.evaluation.pipeline import add_statistics, task_group_results
from hwsi_model.evaluation.statistics import (
    StatsSettings,
    bootstrap_interval,
    closed_table,
    compare_models,
    paired_comparison,
)
from hwsi_model.evaluation.task_groups import OTHER, check_task_groups, task_group


def _closed(per_slide: list[list[int]]):
    ids = [f"s{i}" for i, row in enumerate(per_slide) for _ in row]
    return closed_table(ids, [bool(c) for row in per_slide for c in row])


def test_bootstrap_resamples_slides_not_items() -> None:
    rng = np.random.default_rng(1)
    many = _closed([[int(x)] for x in rng.random(400) < 0.5])  # 400 slides x 1 item
    lo, hi = bootstrap_interval(many, "accuracy")
    p = many.point()["accuracy"]
    half = 1.96 * np.sqrt(p * (1 - p) / 400)  # the normal approximation for independent items
    assert lo < p < hi and abs((hi - lo) / 2 - half) < 0.01
    # 40 slides of 10 identical answers each: 400 items, but the effective sample is 40.
    clustered = _closed([[int(x)] * 10 for x in rng.random(40) < 0.5])
    lo_c, hi_c = bootstrap_interval(clustered, "accuracy")
    assert (hi_c - lo_c) > 2.5 * (hi - lo)
    assert bootstrap_interval(_closed([[1, 0, 1]]), "accuracy") is None  # one slide


def test_paired_permutation_test_is_exact_and_two_sided() -> None:
    better = _closed([[1, 1]] * 10)
    worse = _closed([[0, 1]] * 10)
    c = paired_comparison(better, worse, "accuracy", StatsSettings(n_permutations=9999))
    assert c["difference"] == pytest.approx(0.5) and c["n_slides"] == 10
    assert c["p_value"] == pytest.approx(2 / 2**10)  # all 2^10 swaps; only "all" and "none"
    assert c["interval"] == pytest.approx([0.5, 0.5])
    same = paired_comparison(better, better, "accuracy")
    assert same["difference"] == 0 and same["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same items"):
        paired_comparison(better, _closed([[1, 1]] * 9), "accuracy")


def test_corpus_bleu_from_summed_counts_matches_nltk() -> None:
    from nltk.translate.bleu_score import corpus_bleu

    rng = np.random.default_rng(0)
    words = ["the", "nuclei", "are", "large", "small", "dense", "sparse", "lesion", "tumour",
             "grade", "high", "low"]  # fmt: skip
    refs = [" ".join(rng.choice(words, rng.integers(6, 14))) for _ in range(25)]
    hyps = []  # each reference with about a quarter of its words changed, and cut or not
    for r in refs:
        w = [x if rng.random() > 0.25 else str(rng.choice(words)) for x in r.split()]
        hyps.append(" ".join(w[: int(rng.integers(3, len(w) + 1))]))
    b = metrics.bleu_from_counts(metrics.bleu_counts(hyps, refs).sum(axis=0))
    toks = [metrics.tokenize(h) for h in hyps], [[metrics.tokenize(r)] for r in refs]
    for n in (1, 2, 4):
        w = tuple([1 / n] * n)
        expect = corpus_bleu(toks[1], toks[0], weights=w)
        assert expect > 0.05 and float(b[f"bleu{n}"]) == pytest.approx(expect)


def _file(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """(slide, task, question, answer) -> a demo-format file of closed and open items."""
    recs = []
    for i, (sid, task, q, a) in enumerate(rows):
        rec = {"id": f"i{i}", "slide_id": sid, "task": task, "answer": a,
               "conversations": [{"from": "human", "value": f"<image>\n{q}"},
                                 {"from": "gpt", "value": a}]}  # fmt: skip
        recs.append(rec)
    path.write_text(json.dumps(recs))
    return path


def test_tables_give_the_family_metrics_and_the_intervals(tmp_path: Path) -> None:
    q = "Which grade?\nA) Low\nB) High"
    rows = [(f"s{i}", "Grade", q, "AB"[i % 2]) for i in range(6)]
    rows += [(f"s{i}", "Morphology", "Describe the nuclei.", "Large nuclei.") for i in range(6)]
    items = read_test_set(_file(tmp_path / "t.json", rows), "wsibench")
    hyps = ["A", "B", "B", "B", "A", "A"] + ["Large nuclei."] * 3 + ["Small cells here."] * 3
    scores, tables = score_items_and_tables(items, hyps)
    assert scores == score_items(items, hyps)
    mc = tables["multiple_choice"].point()
    accuracy = scores["multiple_choice"]["metrics"]["accuracy"]
    assert mc["accuracy"] == accuracy == pytest.approx(4 / 6)
    op = tables["open_question"].point()
    for k in ("bleu1", "bleu4", "rouge_l", "meteor"):
        assert op[k] == pytest.approx(scores["open_question"]["metrics"][k])
    const = ["A"] * 6 + ["Nuclei."] * 6
    const_scores, const_tables = score_items_and_tables(items, const)
    results = [{"name": "m", "families": scores}, {"name": "const", "families": const_scores}]
    add_statistics(results, {"m": tables, "const": const_tables}, StatsSettings(n_resamples=200))
    fam = results[0]["families"]["multiple_choice"]
    lo, hi = fam["intervals"]["accuracy"]
    assert lo <= 4 / 6 <= hi and fam["n_slides"] == 6
    assert results[1]["families"]["multiple_choice"]["intervals"]["accuracy"] is not None
    paired = fam["paired"]["const"]["accuracy"]
    assert paired["difference"] == pytest.approx(4 / 6 - 3 / 6) and 0 < paired["p_value"] <= 1
    groups = task_group_results(items, {"m": tables}, None, StatsSettings(n_resamples=200))
    assert set(groups) == {"diagnosis", "morphological_analysis"}
    assert groups["diagnosis"]["multiple_choice"]["n"] == 6
    assert groups["diagnosis"]["multiple_choice"]["models"]["m"]["metrics"]["accuracy"] == (
        pytest.approx(4 / 6)
    )
    cmp = compare_models({"m": tables["open_question"]}, "m")
    assert cmp["paired"] == {} and cmp["intervals"]["m"]["rouge_l"] is not None


def test_task_groups_follow_the_benchmarks_task_names() -> None:
    expect = {
        "Morphology": "morphological_analysis", "cellular": "morphological_analysis",
        "tissue": "morphological_analysis", "infiltration": "morphological_analysis",
        "Caption": "morphological_analysis", "Classification": "diagnosis",
        "Feature": "diagnosis", "Grade": "diagnosis", "Report": "diagnosis",
        "1_Report": "diagnosis", "Diagnosis_choice": "diagnosis", "Stage": "treatment_planning",
        "Subtype": "treatment_planning", "Treatment": "treatment_planning",
        "Prognosis": "treatment_planning", "": OTHER, "size": OTHER,
    }  # fmt: skip
    assert {t: task_group(t) for t in expect} == expect
    mine = check_task_groups({"Size": ["SIZE", "extent"]})
    assert task_group("nuclear size", mine) == "Size" and task_group("Grade", mine) == OTHER
    for bad in ({}, {"g": "size"}, {"g": []}, {"g": [1]}):
        with pytest.raises(ValueError, match="task group"):
            check_task_groups(bad)


def test_majority_baseline_from_the_training_items(tmp_path: Path) -> None:
    train = [
        ("t0", "Grade", "Which grade?\nA) Low\nB) High", "B"),
        ("t1", "Grade", "Which grade?\nA) High\nB) Low", "A"),  # High again, other letter
        ("t2", "Grade", "Which grade?\nA) Low\nB) High", "A"),
        ("t0", "Necrosis", "Is there necrosis?", "No"),
        ("t1", "Necrosis", "Is there necrosis?", "No"),
        ("t2", "Necrosis", "Is there necrosis?", "Yes"),
        ("t0", "Morphology", "Describe the nuclei.", "Large nuclei."),
        ("t1", "Morphology", "Describe the nuclei.", "Small nuclei."),
        ("t2", "Morphology", "Describe the nuclei.", "Small nuclei."),
    ]
    m = fit_majority(read_test_set(_file(tmp_path / "train.json", train), "wsibench"))
    test = [
        ("x", "Grade", "Which grade?\nA) High\nB) Intermediate\nC) Low", "C"),
        ("x", "Necrosis", "Is there necrosis?", "Yes"),
        ("x", "Morphology", "Describe the nuclei.", "Large nuclei."),
        ("x", "Other", "Name the grade please?\nA) Low\nB) Medium", "A"),  # unseen stem
        ("x", "Other", "Pick one?\nA) Foo\nB) Bar", "B"),  # no option text seen in training
    ]
    items = read_test_set(_file(tmp_path / "test.json", test), "wsibench")
    assert question_stem(items[0]) == "which grade"
    assert question_stem(read_test_set(tmp_path / "train.json", "wsibench")[1]) == "which grade"
    answers = m.answer_all(items)
    assert answers[:3] == ["A) High", "No", "Small nuclei."]
    assert answers[3] == "A) Low"  # stem and task unseen: the family's answers, High not offered
    assert answers[4] == "A"  # nor Low: the family's most often correct letter
    scores = score_items(items, answers)
    assert scores["multiple_choice"]["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert scores["true_false"]["metrics"]["accuracy"] == 0.0
    with pytest.raises(ValueError, match="at least one training item"):
        fit_majority([])
