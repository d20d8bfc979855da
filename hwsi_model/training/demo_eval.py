"""Held-out evaluation of a trained model: closed-question accuracy and slide <-> report recall@1.

- :func:`closed_accuracy`: greedy decoding (deterministic), the strict option-letter parser
  (``hwsi_model.evaluation.parsing.parse_option_letter``, imported here), accuracy overall and per
  task, next to chance (mean of 1 / number of options).
- :func:`retrieval_recall` (stage 1): WSI token vs report paragraph in the alignment space;
  recall@1 slide -> report and report -> slide, next to chance (1 / number of slides).

Command line::

    python -m hwsi_model.training.demo_eval --model results/training/stage3/model \\
        --manifest results/manifest.csv --reports cohort/reports.jsonl \\
        --instructions cohort/vqa/test.json --split test --out results/training/eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from hwsi_model.evaluation.parsing import parse_option_letter
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.training.data import PairDataset, SlideStore, collate_examples, read_manifest
from hwsi_model.training.formats import read_instructions, read_reports

log = logging.getLogger(__name__)


def _batches(ds: PairDataset, batch_size: int):
    for i in range(0, len(ds), batch_size):
        yield collate_examples([ds[j] for j in range(i, min(i + batch_size, len(ds)))])


@torch.no_grad()
def closed_accuracy(
    model: HWSIModel, ds: PairDataset, batch_size: int = 8, max_new_tokens: int = 8
) -> dict:
    """Accuracy on the closed items of ``ds`` (greedy decoding); see the module docstring."""
    model.eval()
    correct, total, chance = 0, 0, 0.0
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    closed = [it for it in ds.items if it is not None and it.is_closed]
    if not closed:
        return {"n": 0, "accuracy": None, "chance": None, "per_task": {}}
    sub = PairDataset(ds.store, closed, None)
    for batch in _batches(sub, batch_size):
        answers = model.generate(batch.slides, batch.questions, max_new_tokens=max_new_tokens)
        for item, text in zip(batch.items, answers, strict=True):
            letter = parse_option_letter(text, len(item.options))
            ok = int(letter is not None and letter == item.answer_letter)
            correct += ok
            total += 1
            chance += 1.0 / len(item.options)
            per_task[item.task or "?"][0] += ok
            per_task[item.task or "?"][1] += 1
    return {
        "n": total,
        "accuracy": correct / total if total else None,
        "chance": chance / total if total else None,
        "per_task": {k: {"accuracy": c / n, "n": n} for k, (c, n) in sorted(per_task.items())},
    }


@torch.no_grad()
def retrieval_recall(model: HWSIModel, ds: PairDataset, batch_size: int = 8) -> dict:
    """Slide <-> report recall@1 among the ``n`` slides of ``ds`` (report pairs)."""
    if model.text_encoder is None:
        raise RuntimeError("retrieval needs the text encoder")
    model.eval()
    vis, txt = [], []
    for batch in _batches(ds, batch_size):
        out = model.visual(batch.slides)
        vis.append(model.visual.align(out, ["wsi"])["wsi"].emb[:, 0])
        paragraphs = [v.paragraph for v in batch.views]
        txt.append(model.visual.embed_text(model.text_encoder(paragraphs)))
    v, t = torch.cat(vis), torch.cat(txt)
    sim = v @ t.T  # [n slides, n reports]
    target = torch.arange(len(v))
    return {
        "n": len(v),
        "slide_to_report_r1": float((sim.argmax(1) == target).float().mean()),
        "report_to_slide_r1": float((sim.argmax(0) == target).float().mean()),
        "chance": 1.0 / len(v),
    }


def evaluate(
    model_dir: str | Path,
    manifest: str | Path,
    reports: str | Path | None = None,
    instructions: Sequence[str | Path] = (),
    split: str = "test",
    llm_path: str | None = None,
) -> dict:
    """Closed-question accuracy (when ``instructions`` and an LLM) and retrieval (when reports)."""
    rows = read_manifest(manifest, splits=[split])
    store = SlideStore(rows)
    recs = read_reports(reports) if reports else []
    has_llm = json.loads((Path(model_dir) / "config.json").read_text()).get("llm_path")
    model = HWSIModel.from_pretrained(
        model_dir, llm_path=llm_path, load_llm=bool(has_llm or llm_path)
    )
    result: dict = {"split": split, "model": str(model_dir)}
    if recs and model.text_encoder is not None:
        result["retrieval"] = retrieval_recall(model, PairDataset(store, None, recs))
    if instructions and model.llm is not None:
        items = [it for f in instructions for it in read_instructions(f)]
        result["closed"] = closed_accuracy(model, PairDataset(store, items, recs))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from hwsi_model.logs import setup_logging

    setup_logging()
    p = argparse.ArgumentParser(description="held-out accuracy and retrieval of a trained model")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--reports")
    p.add_argument("--instructions", nargs="*", default=[])
    p.add_argument("--split", default="test")
    p.add_argument("--llm")
    p.add_argument("--out")
    a = p.parse_args(argv)
    result = evaluate(a.model, a.manifest, a.reports, a.instructions, a.split, a.llm)
    text = json.dumps(result, indent=2)
    log.info("evaluation: %s", text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
