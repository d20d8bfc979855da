"""metrics.json and the HTML pages, from made-up results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hwsi_model.evaluation.report_html import (
    relative_link,
    render_cohort_report,
    render_slide_page,
    write_metrics_json,
)


def _result(name: str, acc: float, unparsed: int, bleu1: float) -> dict:
    return {
        "name": name,
        "families": {
            "multiple_choice": {
                "metrics": {"accuracy": acc},
                "n": 24,
                "unparsed": unparsed,
                "chance": 0.4166666,
                "per_task": {"diagnosis": {"accuracy": acc, "n": 6}},
                "confusion": {
                    "labels": ["A", "B"],
                    "columns": ["A", "B", "unparsed"],
                    "matrix": [[7, 2, 1], [3, 11, 0]],
                },
            },
            "open_question": {
                "metrics": {"bleu1": bleu1, "rouge_l": 0.31, "meteor_synonyms": False},
                "n": 12,
                "unparsed": 0,
                "chance": None,
            },
        },
    }


RESULTS = [
    _result("hierarchical", 0.625, 1, 0.41),
    _result("flat", 0.5, 0, 0.38),
    _result("text_only", 0.4583, 2, 0.30),
]


def test_metrics_json_schema(tmp_path: Path) -> None:
    path = write_metrics_json(
        tmp_path / "eval" / "metrics.json", RESULTS, extra={"retrieval": {"r1": 0.5}}
    )
    doc = json.loads(path.read_text())
    assert doc["schema"] == "hwsi.eval_metrics" and doc["model"] == "hierarchical"
    mc = doc["families"]["multiple_choice"]
    assert mc["metrics"] == {"accuracy": 0.625}
    assert (mc["n"], mc["unparsed"], mc["chance"]) == (24, 1, 0.4166666)
    assert mc["baselines"]["flat"] == {"metrics": {"accuracy": 0.5}, "unparsed": 0, "n": 24}
    assert mc["baselines"]["text_only"]["unparsed"] == 2
    assert mc["confusion"]["matrix"][0] == [7, 2, 1]
    oq = doc["families"]["open_question"]
    assert oq["chance"] is None and oq["baselines"]["flat"]["metrics"]["bleu1"] == 0.38
    assert doc["retrieval"] == {"r1": 0.5}
    # a single result is accepted; malformed results are refused
    single = json.loads(write_metrics_json(tmp_path / "m1.json", RESULTS[0]).read_text())
    assert single["families"]["open_question"]["baselines"] == {}
    bad = {"name": "x", "families": {"multiple_choice": {"metrics": {}, "n": -1, "unparsed": 0}}}
    with pytest.raises(ValueError):
        write_metrics_json(tmp_path / "bad.json", bad)


def test_slide_page_values_and_relative_links(tmp_path: Path) -> None:
    run = tmp_path / "run"
    pics = run / "evidence" / "demo_000"
    items = [
        {
            "id": "demo_000_q0",
            "family": "multiple_choice",
            "task": "diagnosis",
            "question": "What is the diagnosis? A) x <b>",
            "answer": "C) High-grade carcinoma.",
            "reference": "C) High-grade carcinoma.",
            "parsed": "C",
            "correct": True,
        },
        {
            "id": "demo_000_q1",
            "family": "true_false",
            "task": "",
            "question": "Dense?",
            "answer": "maybe",
            "reference": "A) Yes.",
            "parsed": None,
            "correct": False,
        },
    ]
    page = render_slide_page(
        run / "slides" / "demo_000.html",
        "demo_000",
        items,
        images={"thumbnail": pics / "thumb.png"},
        item_images={"demo_000_q0": {"patch relevance": pics / "q0_patch.png"}},
        cohort_report=run / "report.html",
    )
    html = page.read_text()
    assert "High-grade carcinoma." in html and "maybe" in html
    assert "A) x &lt;b&gt;" in html  # escaped
    assert 'src="../evidence/demo_000/q0_patch.png"' in html
    assert 'src="../evidence/demo_000/thumb.png"' in html
    assert 'href="../report.html"' in html
    assert html.count('class="ok"') == 1 and "(unparsed)" in html
    assert "<script" not in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not src.startswith("/")  # relative links only


def test_cohort_report_table_baselines_and_links(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = render_cohort_report(
        run / "report.html",
        RESULTS,
        title="Held-out demo slides",
        tables={"Slide-report retrieval": {"hierarchical": {"r1": 0.5, "mrr": 0.61}}},
        examples=[
            {
                "slide_id": "demo_000",
                "family": "open_question",
                "question": "Describe the nuclei.",
                "answer": "Large nuclei.",
                "reference": "Large pleomorphic nuclei.",
                "correct": None,
                "page": run / "slides" / "demo_000.html",
            }
        ],
        curves={"stage 1": tmp_path / "training" / "stage1" / "loss.png"},
        slide_pages={"demo_000": run / "slides" / "demo_000.html"},
        metrics_json=run / "metrics.json",
    )
    html = out.read_text()
    for header in ("hierarchical", "flat", "text_only", "chance"):
        assert f"<th>{header}</th>" in html
    assert "<b>0.625</b>" in html  # the best accuracy, bold
    assert "0.500" in html and "0.458" in html and "0.417" in html  # baselines and chance
    assert "(1 unparsed)" in html and "(2 unparsed)" in html
    assert "bleu1" in html and "<b>0.410</b>" in html and "meteor_synonyms" not in html
    assert "Slide-report retrieval" in html and "0.610" in html
    assert "Confusion matrix: multiple_choice (hierarchical)" in html
    assert "<td>11</td>" in html
    assert 'src="../training/stage1/loss.png"' in html
    assert 'href="slides/demo_000.html"' in html and 'href="metrics.json"' in html
    assert "Large pleomorphic nuclei." in html
    with pytest.raises(ValueError):
        render_cohort_report(run / "x.html", [])


def test_relative_link_quotes() -> None:
    assert relative_link("/a/b/c d.png", "/a/x/page.html") == "../b/c%20d.png"
