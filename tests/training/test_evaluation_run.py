"""The evaluation runner end to end on a WSI-Bench-format file written here, with the method's
model and the text-only baseline; the alignment metrics; ``hwsi ask`` on a cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import D_C, D_P, tiny_model_config

from hwsi_model.cli import main as hwsi
from hwsi_model.evaluation.runner import EvalConfig, alignment_metrics, evaluate_models
from hwsi_model.model.checkpoint import load_model_folder, save_model_folder
from hwsi_model.training.stage_config import StageConfig
from hwsi_model.training.stage_model import load_stage_model, new_stage1_model


@pytest.fixture(scope="module")
def folders(tiny_text_encoder, tiny_llm, tmp_path_factory) -> dict[str, Path]:
    """Untrained model folders: the method after stage 2 and the text-only baseline."""
    root = tmp_path_factory.mktemp("eval_models")
    config = tiny_model_config(tiny_text_encoder)
    config.llm_path = str(tiny_llm)
    torch.manual_seed(0)
    save_model_folder(new_stage1_model(config, StageConfig(stage=1), D_P, D_C), root / "s1")
    out = {"stage1": root / "s1"}
    for name, cfg in {
        "hierarchy": StageConfig(stage=2),
        "text_only": StageConfig(stage=3, visual_input="none", llm_tuning="full"),
    }.items():
        save_model_folder(load_stage_model(root / "s1", cfg), root / name)
        out[name] = root / name
    return out


def _wsibench_file(path: Path) -> Path:
    """Three hand-written WSI-Bench items on the toy cohort's validation slides."""
    items = [
        {
            "id": "q1",
            "image": ["./toy_06.svs"],
            "conversations": [
                {"from": "human", "value": "<image>\nWhich grade?\nA) Low\nB) High"},
                {"from": "gpt", "value": "B) High"},
            ],
        },
        {
            "id": "q2",
            "image": "toy_07.svs",
            "conversations": [
                {"from": "human", "value": "<image>\nIs there necrosis?"},
                {"from": "gpt", "value": "No"},
            ],
        },
        {
            "id": "q3",
            "image": "toy_08.svs",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the nuclei."},
                {"from": "gpt", "value": "Large pleomorphic nuclei with coarse chromatin."},
            ],
        },
    ]
    path.write_text(json.dumps(items))
    return path


def test_evaluate_models_on_wsibench_items(folders, cohort, tmp_path) -> None:
    test_file = _wsibench_file(tmp_path / "wsibench_test.json")
    models = {"hierarchy": folders["hierarchy"], "text_only": folders["text_only"]}
    cfg = EvalConfig(batch_size=2, max_new_tokens={"closed": 4, "open": 6})
    out = tmp_path / "eval"
    run = evaluate_models(models, cohort["manifest"], [test_file], out, "val", cfg=cfg)
    assert [e.family for e in run["items"]] == ["multiple_choice", "true_false", "open_question"]
    for name in models:
        lines = (out / "predictions" / f"{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
        assert [r["answer"] for r in rows] == run["answers"][name]
        mc = run["families"][name]["multiple_choice"]
        assert mc["n"] == 1 and mc["chance"] == 0.5
        assert mc["metrics"]["accuracy"] == float(rows[0]["correct"])
        assert mc["unparsed"] == int(rows[0]["parsed"] is None)
        assert run["families"][name]["open_question"]["n"] == 1
    # Greedy decoding with a fixed seed: the same answers again.
    again = evaluate_models(
        {"text_only": folders["text_only"]}, cohort["manifest"], [test_file], tmp_path / "e2",
        "val", cfg=cfg,
    )  # fmt: skip
    assert again["answers"]["text_only"] == run["answers"]["text_only"]


def test_evaluation_refuses_a_test_set_without_slides(folders, cohort, tmp_path) -> None:
    test_file = _wsibench_file(tmp_path / "t.json")
    with pytest.raises(ValueError, match="no test item has a slide"):
        evaluate_models({"m": folders["hierarchy"]}, cohort["manifest"], [test_file], tmp_path,
                        "train")  # fmt: skip


def test_alignment_metrics(folders, cohort) -> None:
    model = load_model_folder(folders["stage1"], load_llm=False)
    prompts = {"benign": ["benign glands"], "low_grade": "low-grade carcinoma"}
    result = alignment_metrics(model, cohort["manifest"], "val", cohort["reports"], prompts)
    s2r = result["retrieval"]["slide_to_report"]
    assert s2r["n"] == 3 and s2r["chance_r1"] == pytest.approx(1 / 3)
    assert 0 <= s2r["r1"] <= s2r["r5"] == 1.0 and 1 / 3 <= s2r["mrr"] <= 1
    zs = result["zero_shot"]
    assert zs["n"] == 3 and zs["chance"] == pytest.approx(1 / 3)
    assert zs["prompts"]["low_grade"] == ["low-grade carcinoma"]
    assert zs["prompts"]["high_grade"][1] == "The slide shows high grade."  # default prompts


def test_hwsi_ask_on_a_cache(folders, cohort, capsys) -> None:
    cache = next((Path(cohort["manifest"]).parent / "cache").glob("toy_06.zarr"))
    rc = hwsi(["ask", "--model", str(folders["hierarchy"]), "--slide", str(cache),
               "--max-new-tokens", "3", "--json", "Which grade?\nA) Low\nB) High"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["slide_id"] == "toy_06" and out["question"].startswith("Which grade?")
    assert isinstance(out["answer"], str) and out["pictures"] == {}


def test_run_evaluation_writes_the_run_folder(folders, cohort, tmp_path) -> None:
    from hwsi_model.evaluation.facts import fact_table, score_text, slide_truth
    from hwsi_model.evaluation.pipeline import EvaluationInputs, run_evaluation, summary_lines

    test_file = _wsibench_file(tmp_path / "wsibench_test.json")
    out = tmp_path / "evaluation"
    # the reports with ground-truth facts for toy_08 (the open question's slide)
    records = [json.loads(x) for x in cohort["reports"].read_text().splitlines()]
    truth = {"chromatin": "coarse", "lesion_nucleus_diameter_um_mean": 12.0}
    for r in records:
        r["facts"] = truth if r["slide_id"] == "toy_08" else None
    reports = tmp_path / "reports_with_facts.jsonl"
    reports.write_text("".join(json.dumps(r) + "\n" for r in records))
    inputs = EvaluationInputs(
        folders["hierarchy"], cohort["manifest"], [test_file],
        baselines={"text_only": folders["text_only"]}, stage1_dir=folders["stage1"],
        reports=reports, split="val", train_files=[cohort["vqa_train"]],
    )  # fmt: skip
    doc = run_evaluation(
        inputs, out, EvalConfig(batch_size=3, max_new_tokens={"closed": 3, "open": 4})
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"] == "hierarchical" and saved["split"] == "val"
    mc = saved["families"]["multiple_choice"]
    assert mc["n"] == 1 and mc["chance"] == 0.5
    assert set(mc["baselines"]) == {"text_only", "majority"}
    # one slide per family: no interval is drawn from a single slide, and it is said so
    assert mc["n_slides"] == 1 and mc["intervals"]["accuracy"] is None
    assert set(mc["paired"]) == {"text_only", "majority"}
    assert saved["statistics"]["unit"] == "slide"
    groups = saved["task_groups"]
    assert sum(f["n"] for g in groups.values() for f in g.values()) == 3
    # the majority baseline's most frequent training option text is not offered by the test
    # question: it falls back to the most often correct letter (a three-way tie: the first, A)
    lines = (out / "predictions" / "majority.jsonl").read_text().splitlines()
    preds = {p["id"]: p for p in map(json.loads, lines)}
    assert preds["q1"]["answer"] == "A" and not preds["q1"]["correct"]
    # fact scores of the open answer, as score_text gives them on the saved prediction
    facts = saved["facts"]["open_question"]
    assert facts["n"] == 1 and set(facts["models"]) == {"hierarchical", "text_only"}
    lines = (out / "predictions" / "hierarchical.jsonl").read_text().splitlines()
    answer = next(p["answer"] for p in map(json.loads, lines) if p["id"] == "q3")
    expect = fact_table(
        ["toy_08"],
        [
            score_text(
                answer,
                slide_truth(truth, "high_grade"),
                "Large pleomorphic nuclei with coarse chromatin.",
            )
        ],
    )
    assert (
        facts["models"]["hierarchical"]["metrics"]["fact_recall"] == expect.point()["fact_recall"]
    )
    # training held multiple-choice items only: no majority figure for the other families
    assert "majority" not in saved["families"]["true_false"]["baselines"]
    assert set(saved["families"]["true_false"]["paired"]) == {"text_only"}
    assert saved["retrieval"]["slide_to_report"]["n"] == 3
    assert set(saved["provenance"]["models"]) == {"hierarchical", "text_only"}
    assert set(saved["provenance"]["caches"]) == {"toy_06", "toy_07", "toy_08"}
    assert doc["families"].keys() == saved["families"].keys()
    lines = summary_lines(doc)  # what `hwsi metrics` and `make demo` print
    mc_line = next(x for x in lines if x.startswith("multiple_choice (n=1, 1 slides"))
    assert "text_only: accuracy" in mc_line and "majority: accuracy" in mc_line
    assert any(x.startswith("facts in open_question (n=1, 1 slides): hierarchical:") for x in lines)
    html = (out / "report.html").read_text()
    assert "hierarchical" in html and "text_only" in html and "slides/toy_06.html" in html
    assert "Paired differences, hierarchical minus each baseline" in html
    assert "Results by task group" in html and "Facts stated in open answers" in html
    assert sorted(p.name for p in (out / "slides").glob("*.html")) == [
        "toy_06.html", "toy_07.html", "toy_08.html",
    ]  # fmt: skip
    assert len((out / "predictions" / "text_only.jsonl").read_text().splitlines()) == 3


def test_ask_refuses_a_missing_slide_and_a_cache_of_another_slide(cohort, tmp_path) -> None:
    import shutil

    import zarr

    from hwsi_model.errors import HwsiError
    from hwsi_model.evaluation.ask import prepare_cache

    results = tmp_path / "results"
    cache = results / "cache" / "toy_06.zarr"
    shutil.copytree(Path(cohort["manifest"]).parent / "cache" / "toy_06.zarr", cache)
    zarr.open_group(cache, mode="r+").attrs["slide_path"] = str(tmp_path / "elsewhere.svs")
    with pytest.raises(HwsiError, match="does not exist"):
        prepare_cache(tmp_path / "nope.svs", results, "config.yaml")
    other = tmp_path / "toy_06.svs"  # the id of a cached slide, another file
    other.write_bytes(b"not a slide")
    with pytest.raises(HwsiError, match="choose another --slide-id"):
        prepare_cache(other, results, "config.yaml")
