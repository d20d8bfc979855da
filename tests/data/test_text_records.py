"""Readers of reports and instruction formats, on tiny hand-written examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwsi_model.data.text_records import (
    DataFormatError,
    parse_options,
    read_instructions,
    read_reports,
    report_items,
    slide_id_from_image,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_wsibench_jsonl_multi_turn_and_closed(tmp_path: Path) -> None:
    recs = [
        {
            "id": "q1",
            "image": "TCGA-AB-0001-01Z.svs",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is the grade?\nA) Low\nB) High"},
                {"from": "gpt", "value": "B) High."},
                {"from": "human", "value": "Is there necrosis?"},
                {"from": "gpt", "value": "Yes, focal necrosis."},
            ],
        }
    ]
    path = write(tmp_path / "bench.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    items = read_instructions(path)
    assert [it.slide_id for it in items] == ["TCGA-AB-0001-01Z"] * 2
    assert items[0].question.startswith("What is the grade?") and "<image>" not in items[0].question
    assert items[0].is_closed and items[0].options == ["Low", "High"]
    assert items[0].answer_letter == "B"
    assert not items[1].is_closed and items[1].answer == "Yes, focal necrosis."
    assert items[1].id == "q1_t1"


def test_demo_format_keeps_its_fields(tmp_path: Path) -> None:
    rec = {
        "id": "demo_000_q0",
        "image": "demo_000.tiff",
        "slide_id": "demo_000",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nWhich diagnosis?\nA) X\nB) Y\nAnswer with the option's letter.",
            },
            {"from": "gpt", "value": "A) X."},
        ],
        "question_type": "closed",
        "task": "diagnosis",
        "options": ["X", "Y"],
        "answer": "A",
    }
    items = read_instructions(write(tmp_path / "val.json", json.dumps([rec])), "demo")
    assert items[0].answer_letter == "A" and items[0].task == "diagnosis"
    assert items[0].options == ["X", "Y"]


def test_slideinstruct_image_list(tmp_path: Path) -> None:
    rec = {
        "id": 7,
        "image": ["./TCGA-XY-1234-01Z-00-DX1.csv"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the slide."},
            {"from": "gpt", "value": "Invasive carcinoma."},
        ],
    }
    items = read_instructions(write(tmp_path / "inst.json", json.dumps([rec])), "slideinstruct")
    assert (
        items[0].slide_id == "TCGA-XY-1234-01Z-00-DX1"
        and items[0].question == "Describe the slide."
    )


def test_slidebench_csv(tmp_path: Path) -> None:
    text = (
        "ID,Slide,Tumor,Broad Category,Narrow Category,Question,A,B,C,D,Answer\n"
        '1,TCGA-01,BRCA,Diagnosis,Subtype,"Which subtype?",Ductal,Lobular,Mucinous,Other,B\n'
    )
    items = read_instructions(write(tmp_path / "SlideBench-VQA(TCGA).csv", text))
    it = items[0]
    assert it.slide_id == "TCGA-01" and it.answer_letter == "B" and it.answer == "B) Lobular."
    assert it.options == ["Ductal", "Lobular", "Mucinous", "Other"]
    assert "B) Lobular" in it.question and it.task == "Diagnosis"


def test_wsivqa_open_and_closed(tmp_path: Path) -> None:
    recs = [
        {
            "Id": "TCGA-A1",
            "Question": "What is the ER status?",
            "Answer": "positive",
            "Choice": ["negative", "positive"],
        },
        {
            "Id": "TCGA-A1",
            "Question": "How many days did the patient survive?",
            "Answer": "1200",
            "Choice": [],
        },
    ]
    items = read_instructions(write(tmp_path / "WsiVQA_train.json", json.dumps(recs)))
    assert (
        items[0].is_closed and items[0].answer_letter == "B" and items[0].answer == "B) positive."
    )
    assert not items[1].is_closed and items[1].answer == "1200"
    bad = [{"Id": "x", "Question": "q", "Answer": "maybe", "Choice": ["yes", "no"]}]
    with pytest.raises(DataFormatError, match="not one of the choices"):
        read_instructions(write(tmp_path / "bad.json", json.dumps(bad)), "wsivqa")


def test_reports_jsonl_csv_and_caption_items(tmp_path: Path) -> None:
    jl = write(
        tmp_path / "r.jsonl",
        json.dumps({"slide_id": "s1", "label": "a", "report": " A  b. "}) + "\n",
    )
    csvf = write(tmp_path / "r.csv", "slide_id,caption\ns2,Some caption.\n")
    assert read_reports(jl)[0].report == "A b." and read_reports(jl)[0].label == "a"
    assert read_reports(csvf)[0].slide_id == "s2"
    items = report_items(read_reports(jl))
    assert items[0].answer == "A b." and items[0].task == "report"
    with pytest.raises(DataFormatError, match="report text"):
        read_reports(write(tmp_path / "x.jsonl", '{"slide_id": "s"}\n'))


def test_helpers() -> None:
    assert slide_id_from_image("a/b/S1.ome.tiff") == "S1"
    assert slide_id_from_image(["./T-1.csv"]) == "T-1"
    assert parse_options("Q?\nA) one\nB) two") == ["one", "two"]
    assert parse_options("Q?\nB) two") == []


def test_inline_options_whose_text_holds_parentheses_and_letters() -> None:
    """WSI-Bench writes the options on the question's line; their texts may hold "(Grade I)",
    numbers and punctuation, and a letter mark inside a text is not the next option."""
    q = (
        "What is the tumour grade? A) Well differentiated (Grade I) B) Moderately"
        " differentiated (Grade II) C) Poorly differentiated, 3+ mitoses (Grade III)"
        " D) Undifferentiated (Grade IV)"
    )
    assert parse_options(q) == [
        "Well differentiated (Grade I)",
        "Moderately differentiated (Grade II)",
        "Poorly differentiated, 3+ mitoses (Grade III)",
        "Undifferentiated (Grade IV)",
    ]
    assert parse_options("Is it (A) benign?") == []  # one mark is not a list of options
