"""Test-set formats -> task families -> scores, on hand-written items of each format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwsi_model.evaluation.families import (
    CAPTION,
    CLASSIFICATION,
    MULTIPLE_CHOICE,
    OPEN_QUESTION,
    REPORT,
    TRUE_FALSE,
    detect_format,
    label_items,
    read_test_set,
    score_items,
)

SLIDE = "TCGA-21-1083-01Z-00-DX1"


def _write(path: Path, records: list[dict], jsonl: bool = False) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def _conv(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]


@pytest.fixture
def wsibench_choice(tmp_path: Path) -> Path:
    """WSI-Bench conversation files: a choice question (options inline) and a TF question."""
    return _write(
        tmp_path / "Diagnosis_choice_test.json",
        [
            {
                "id": f"{SLIDE}-1",
                "image": f"TCGA-LUSC/{SLIDE}.pt",
                "conversations": _conv(
                    "What is the histological classification? A) Adenocarcinoma "
                    "B) Small cell carcinoma C) Squamous cell carcinoma D) Large cell carcinoma",
                    "C",
                ),
            },
            {
                "id": f"{SLIDE}-2",
                "image": f"TCGA-LUSC/{SLIDE}.pt",
                "conversations": _conv("Given the diagnosis, is the prognosis good?", "No"),
            },
        ],
    )


def test_wsibench_conversations_end_to_end(wsibench_choice: Path) -> None:
    assert detect_format(wsibench_choice) == "wsibench"
    items = read_test_set(wsibench_choice)
    assert [e.family for e in items] == [MULTIPLE_CHOICE, TRUE_FALSE]
    mc, tf = items
    assert mc.item.slide_id == SLIDE and mc.n_options == 4 and mc.target == "C"
    assert mc.item.options[2] == "Squamous cell carcinoma"
    assert tf.target is False and tf.n_options == 2
    assert mc.item.task == "Diagnosis_choice"  # from the file name
    scores = score_items(items, ["C) Squamous cell carcinoma", "No, the prognosis is poor."])
    assert scores[MULTIPLE_CHOICE]["metrics"]["accuracy"] == 1.0
    assert scores[MULTIPLE_CHOICE]["chance"] == pytest.approx(0.25)
    assert scores[TRUE_FALSE] | {"per_task": None, "confusion": None} == {
        "metrics": {"accuracy": 1.0},
        "n": 1,
        "unparsed": 0,
        "chance": 0.5,
        "per_task": None,
        "confusion": None,
    }
    wrong = score_items(items, ["The answer is C", "Maybe"])
    assert wrong[MULTIPLE_CHOICE]["unparsed"] == 1 and wrong[TRUE_FALSE]["unparsed"] == 1
    assert wrong[MULTIPLE_CHOICE]["metrics"]["accuracy"] == 0.0
    assert wrong[MULTIPLE_CHOICE]["confusion"]["matrix"][2] == [0, 0, 0, 0, 1]


def test_wsibench_test_jsonl(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "WSI-Bench-test.jsonl",
        [
            {
                "question_id": f"Morphology_{SLIDE}-1_1",
                "image": f"TCGA-BRCA/{SLIDE}.pt",
                "question": "Do the tumour cells show nuclear pleomorphism?",
                "T-answer": "Yes, marked nuclear pleomorphism is seen.",
                "metadata": "Morphology",
            },
            {
                "question_id": f"Report_{SLIDE}-1_1",
                "image": f"TCGA-BRCA/{SLIDE}.pt",
                "question": "Write the pathology report of this slide.",
                "T-answer": "Invasive ductal carcinoma, grade 2.",
                "metadata": "Report",
            },
        ],
        jsonl=True,
    )
    assert detect_format(path) == "wsibench_test"
    items = read_test_set(path)
    assert [e.family for e in items] == [OPEN_QUESTION, REPORT]
    assert items[0].item.id == f"Morphology_{SLIDE}-1_1" and items[0].item.task == "Morphology"
    assert items[0].benchmark == "wsibench_test"
    answers = ["Yes, marked nuclear pleomorphism is seen.", "Invasive lobular carcinoma."]
    scores = score_items(items, answers)
    assert scores[OPEN_QUESTION]["metrics"]["bleu1"] == pytest.approx(1.0)
    assert scores[OPEN_QUESTION]["chance"] is None and scores[OPEN_QUESTION]["unparsed"] == 0
    assert 0 < scores[REPORT]["metrics"]["rouge_l"] < 1
    assert "meteor_synonyms" in scores[REPORT]["metrics"]


def test_slidebench_tcga_bcnb_and_caption(tmp_path: Path) -> None:
    tcga = tmp_path / "SlideBench-VQA(TCGA).csv"
    tcga.write_text(
        "ID,Slide,Tumor,Broad Category,Narrow Category,Question,A,B,C,D,Answer\n"
        f"1,{SLIDE},LUSC,Diagnosis,Histology,What is the tumour type?,"
        "Adenocarcinoma,Squamous cell carcinoma,Mesothelioma,Lymphoma,B\n"
    )
    bcnb = tmp_path / "SlideBench-VQA(BCNB).csv"
    bcnb.write_text(
        "Slide,Task,Question,A,B,C,D,Answer\n"
        "17,HER2,What is the HER2 status?,Negative,Positive,,,Positive\n"
    )
    cap = tmp_path / "SlideBench-Caption.csv"
    cap.write_text(f"Slide,Caption\n{SLIDE},Sheets of atypical squamous cells with keratin.\n")
    t, b, c = read_test_set(tcga), read_test_set(bcnb), read_test_set(cap)
    assert (t[0].family, t[0].benchmark, t[0].target, t[0].item.task) == (
        MULTIPLE_CHOICE,
        "slidebench_tcga",
        "B",
        "Diagnosis",
    )
    assert (b[0].benchmark, b[0].n_options, b[0].target) == ("slidebench_bcnb", 2, "B")
    assert (c[0].family, c[0].item.slide_id, c[0].benchmark) == (
        CAPTION,
        SLIDE,
        "slidebench_caption",
    )
    scores = score_items(t + b + c, ["B", "positive", "Sheets of atypical squamous cells."])
    assert scores[MULTIPLE_CHOICE]["metrics"]["accuracy"] == 1.0  # "positive" = option text
    assert scores[MULTIPLE_CHOICE]["chance"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert scores[CAPTION]["n"] == 1


def test_wsivqa_open_and_closed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "WsiVQA_test.json",
        [
            {"Id": SLIDE, "Question": "What is the grade?", "Answer": "grade 2", "Choice": []},
            {
                "Id": SLIDE,
                "Question": "Is there lymphovascular invasion?",
                "Answer": "absent",
                "Choice": ["present", "absent"],
            },
            {"Id": SLIDE, "Question": "Is it HPV positive?", "Answer": "yes", "Choice": []},
        ],
    )
    items = read_test_set(path)
    assert [e.family for e in items] == [OPEN_QUESTION, MULTIPLE_CHOICE, TRUE_FALSE]
    scores = score_items(items, ["grade 3", "A) present", "No."])
    assert scores[MULTIPLE_CHOICE]["metrics"]["accuracy"] == 0.0
    assert scores[TRUE_FALSE]["metrics"]["accuracy"] == 0.0
    assert scores[TRUE_FALSE]["confusion"]["matrix"] == [[0, 1, 0], [0, 0, 0]]


def test_demo_format_and_yes_no_options(tmp_path: Path) -> None:
    base = {"image": "demo_000.tiff", "slide_id": "demo_000", "question_type": "closed"}
    recs = [
        {
            **base,
            "id": "demo_000_q0",
            "conversations": _conv(
                "What is the most likely diagnosis?\nA) Low-grade carcinoma\n"
                "B) Benign glandular tissue\nC) High-grade carcinoma\nAnswer with the option's "
                "letter.",
                "C) High-grade carcinoma.",
            ),
            "task": "diagnosis",
            "options": ["Low-grade carcinoma", "Benign glandular tissue", "High-grade carcinoma"],
            "answer": "C",
        },
        {
            **base,
            "id": "demo_000_q2",
            "conversations": _conv(
                "Are the lesional nuclei densely packed?\nA) Yes\nB) No", "A) Yes. About 30."
            ),
            "task": "morphology",
            "options": ["Yes", "No"],
            "answer": "A",
        },
        {
            "id": "demo_000_q5",
            "image": "demo_000.tiff",
            "slide_id": "demo_000",
            "question_type": "open",
            "task": "report",
            "conversations": _conv("Write a report.", "Overall, high-grade carcinoma."),
        },
    ]
    items = read_test_set(_write(tmp_path / "test.json", recs), benchmark="demo")
    assert [e.family for e in items] == [MULTIPLE_CHOICE, TRUE_FALSE, REPORT]
    assert items[1].target is True
    scores = score_items(items, ["C)", "Yes, densely packed", "Overall, high-grade carcinoma."])
    assert scores[MULTIPLE_CHOICE]["per_task"]["diagnosis"]["accuracy"] == 1.0
    assert scores[TRUE_FALSE]["metrics"]["accuracy"] == 1.0
    rec = items[0].record("B) Benign")
    assert rec["parsed"] == "B" and rec["target"] == "C" and rec["correct"] is False
    assert items[2].record("x")["correct"] is None


def test_classification_labels() -> None:
    labels = ["benign", "low_grade", "high_grade"]
    items = label_items([("s1", "benign"), ("s2", "high_grade"), ("s3", "low_grade")], labels)
    assert all(e.family == CLASSIFICATION and e.n_options == 3 for e in items)
    assert "low_grade" in items[0].item.question
    scores = score_items(items, ["Benign.", "high grade", "a low grade lesion"])
    r = scores[CLASSIFICATION]
    assert r["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert r["unparsed"] == 1 and r["chance"] == pytest.approx(1 / 3)
    assert r["confusion"]["columns"] == [*labels, "unparsed"]
    with pytest.raises(ValueError):
        label_items([("s4", "other")], labels)
    with pytest.raises(ValueError):
        score_items(items, ["benign"])


def test_report_file_name_gives_the_family(tmp_path: Path) -> None:
    rec = {
        "id": f"{SLIDE}-1",
        "image": f"TCGA-LUSC/{SLIDE}.pt",
        "conversations": _conv("Write the report.", "Squamous cell carcinoma, keratinizing."),
    }
    items = read_test_set(_write(tmp_path / "1_Report_test.json", [rec]))
    assert items[0].family == REPORT and items[0].item.task == "1_Report"
    forced = read_test_set(_write(tmp_path / "x.json", [rec]), open_family=CAPTION)
    assert forced[0].family == CAPTION
