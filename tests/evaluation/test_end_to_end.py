"""A WSI-Bench-format test file written here, read, scored for two models, and reported."""

from __future__ import annotations

import json
from pathlib import Path

from hwsi_model.evaluation.families import read_test_set, score_items
from hwsi_model.evaluation.report_html import (
    render_cohort_report,
    render_slide_page,
    training_curves,
    write_metrics_json,
)


def _conv(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]


def test_wsibench_file_end_to_end(tmp_path: Path) -> None:
    slides = ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"]
    q_mc = "What is the grade? A) Well differentiated B) Moderately differentiated C) Poorly"
    records = []
    for i, sid in enumerate(slides):
        records += [
            {"id": f"{sid}-1", "image": f"TCGA-X/{sid}.pt", "conversations": _conv(q_mc, "BC"[i])},
            {
                "id": f"{sid}-2",
                "image": f"TCGA-X/{sid}.pt",
                "conversations": _conv("Is the prognosis good?", ["Yes", "No"][i]),
            },
            {
                "id": f"{sid}-3",
                "image": f"TCGA-X/{sid}.pt",
                "conversations": _conv(
                    "Describe the nuclei.", "The nuclei are large and pleomorphic."
                ),
            },
        ]
    test_file = tmp_path / "WSI-Bench_test.json"
    test_file.write_text(json.dumps(records))
    items = read_test_set(test_file)
    assert len(items) == 6

    answers = {
        "hierarchical": ["B) Moderately", "Yes", "The nuclei are large.", "C", "No.", "Large."],
        "text_only": ["A", "No", "Nuclei.", "The answer is C", "Yes", "Small nuclei."],
    }
    results = [{"name": m, "families": score_items(items, a)} for m, a in answers.items()]
    hier, text = (r["families"] for r in results)
    assert hier["multiple_choice"]["metrics"]["accuracy"] == 1.0
    assert text["multiple_choice"]["metrics"]["accuracy"] == 0.0
    assert text["multiple_choice"]["unparsed"] == 1
    assert hier["true_false"]["metrics"]["accuracy"] == 1.0
    assert hier["open_question"]["metrics"]["bleu1"] > text["open_question"]["metrics"]["bleu1"]

    run = tmp_path / "eval"
    (tmp_path / "training" / "stage1").mkdir(parents=True)
    (tmp_path / "training" / "stage1" / "loss.png").write_bytes(b"png")
    metrics = write_metrics_json(run / "metrics.json", results)
    pages = {}
    for sid in slides:
        recs = [
            e.record(a)
            for e, a in zip(items, answers["hierarchical"], strict=True)
            if e.item.slide_id == sid
        ]
        pages[sid] = render_slide_page(
            run / "slides" / f"{sid}.html", sid, recs, cohort_report=run / "report.html"
        )
    report = render_cohort_report(
        run / "report.html",
        results,
        curves=training_curves(tmp_path / "training"),
        slide_pages=pages,
        metrics_json=metrics,
    )
    doc = json.loads(metrics.read_text())
    assert doc["families"]["multiple_choice"]["baselines"]["text_only"]["unparsed"] == 1
    html = report.read_text()
    assert 'src="../training/stage1/loss.png"' in html
    assert f'href="slides/{slides[0]}.html"' in html
    assert "Moderately" in pages[slides[0]].read_text()
