"""Answer every test item with each model and score the answers per task family.

- :func:`answer_items`: deterministic decoding (greedy, or beam search with ``num_beams``; the
  seed is fixed), closed and open items batched separately (short and long answers).
- :func:`alignment_metrics`: from a stage-1 (or later) model's alignment space, slide <-> report
  retrieval (recall@1/5/10, MRR) and zero-shot slide classification against class prompts.
- :func:`evaluate_models`: the whole run for the method and its baselines on one test split;
  per-item predictions (JSONL) and the per-family metrics of every model, next to chance.

The run folder (``metrics.json``, HTML pages, evidence maps) is written by
:mod:`hwsi_model.evaluation.pipeline` with :mod:`hwsi_model.evaluation.report_html`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hwsi_model.data.manifest import read_manifest
from hwsi_model.data.pairs import PairDataset, SlideStore, collate_examples
from hwsi_model.data.text_records import read_reports
from hwsi_model.devices import resolve_device
from hwsi_model.errors import HwsiError
from hwsi_model.evaluation import metrics
from hwsi_model.evaluation.families import EvalItem, read_test_set, score_items_and_tables
from hwsi_model.model.batch import collate_slides
from hwsi_model.model.checkpoint import load_model_folder
from hwsi_model.model.mllm import HWSIModel

log = logging.getLogger(__name__)


class EvaluationInputError(HwsiError, ValueError):
    """The test set does not fit the cohort (no item has a slide of the split): one clear line
    in the workflow's log rather than a traceback."""


#: New tokens per answer: closed answers are a letter and an option, open ones a paragraph.
MAX_NEW_TOKENS = {"closed": 24, "open": 192}


@dataclass
class EvalConfig:
    """Decoding and batching of an evaluation run."""

    batch_size: int = 8
    num_beams: int = 1
    seed: int = 0
    max_new_tokens: dict[str, int] = field(default_factory=lambda: dict(MAX_NEW_TOKENS))
    bertscore_model: str | None = None
    #: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"


@torch.no_grad()
def answer_items(
    model: HWSIModel, store: SlideStore, items: Sequence[EvalItem], cfg: EvalConfig | None = None
) -> list[str]:
    """One generated answer per item (same order); items whose slide is missing raise."""
    cfg = cfg or EvalConfig()
    missing = sorted({e.item.slide_id for e in items if e.item.slide_id not in store})
    if missing:
        raise EvaluationInputError(
            f"{len(missing)} test slide(s) are not in the manifest split: {missing[:5]}"
        )
    model.eval()
    answers: list[str | None] = [None] * len(items)
    for group in ("closed", "open"):
        idx = [i for i, e in enumerate(items) if e.group == group]
        ds = PairDataset(store, [items[i].item for i in idx], None) if idx else None
        chunks = range(0, len(idx), cfg.batch_size)
        for start in tqdm(chunks, desc=f"answering {group} items", leave=False, disable=not idx):
            part = idx[start : start + cfg.batch_size]
            batch = collate_examples([ds[start + j] for j in range(len(part))])
            torch.manual_seed(cfg.seed)
            texts = model.generate(
                batch.slides,
                batch.questions,
                max_new_tokens=cfg.max_new_tokens[group],
                histories=batch.histories,
                num_beams=cfg.num_beams,
            )
            for i, text in zip(part, texts, strict=True):
                answers[i] = text.strip()
    return [a or "" for a in answers]


@torch.no_grad()
def wsi_embeddings(model: HWSIModel, store: SlideStore, slide_ids: Sequence[str]) -> np.ndarray:
    """Normalised alignment-space embeddings ``[N, A]`` of the slides' WSI tokens."""
    model.eval()
    vis = []
    for sid in slide_ids:
        out = model.visual(collate_slides([store[sid]]).to(model.device))
        vis.append(model.visual.align(out, ["wsi"])["wsi"].emb[0, 0])
    return torch.nn.functional.normalize(torch.stack(vis), dim=-1).float().cpu().numpy()


@torch.no_grad()
def text_embeddings(model: HWSIModel, texts: Sequence[str]) -> np.ndarray:
    """Normalised alignment-space embeddings ``[N, A]`` of texts (text encoder + projector)."""
    if model.text_encoder is None:
        raise ValueError("the alignment metrics need the model's text encoder")
    e = model.visual.embed_text(model.text_encoder(list(texts)))
    return torch.nn.functional.normalize(e, dim=-1).float().cpu().numpy()


def class_prompt_embeddings(model: HWSIModel, prompts: Mapping[str, Sequence[str]]) -> np.ndarray:
    """``[K, A]``: per class the normalised mean of its prompts' alignment-space embeddings."""
    rows = [text_embeddings(model, texts).mean(0) for texts in prompts.values()]
    return np.stack([r / max(float(np.linalg.norm(r)), 1e-12) for r in rows])


def default_class_prompts(labels: Sequence[str]) -> dict[str, list[str]]:
    """Prompts per label when the config gives none: the label's words in three templates."""
    out = {}
    for label in labels:
        name = label.replace("_", " ")
        out[label] = [name, f"The slide shows {name}.", f"Diagnosis: {name}."]
    return out


def alignment_metrics(
    model: HWSIModel,
    manifest: str | Path,
    split: str,
    reports: str | Path | None = None,
    class_prompts: Mapping[str, Sequence[str] | str] | None = None,
) -> dict[str, Any]:
    """Slide <-> report retrieval and zero-shot classification on the ``split`` slides (each
    slide is read and encoded once)."""
    rows = read_manifest(manifest, splits=[split])
    recs = {r.slide_id: r.report for r in read_reports(reports)} if reports else {}
    used = [r for r in rows if r.slide_id in recs or r.label]
    if not used:
        return {}
    used_ids = [r.slide_id for r in used]
    emb = dict(zip(used_ids, wsi_embeddings(model, SlideStore(used), used_ids), strict=True))
    result: dict[str, Any] = {}
    ids = [r.slide_id for r in used if r.slide_id in recs]
    if ids:
        sim = np.stack([emb[s] for s in ids]) @ text_embeddings(model, [recs[s] for s in ids]).T
        result["retrieval"] = {
            "slide_to_report": metrics.retrieval_metrics(sim),
            "report_to_slide": metrics.retrieval_metrics(sim.T),
        }
    labelled = [r for r in used if r.label]
    if labelled:
        names = sorted({r.label for r in labelled})
        given = {
            k: [v] if isinstance(v, str) else list(v) for k, v in (class_prompts or {}).items()
        }
        prompts = {k: given.get(k) or default_class_prompts([k])[k] for k in names}
        zs = metrics.zero_shot_accuracy(
            np.stack([emb[r.slide_id] for r in labelled]),
            class_prompt_embeddings(model, prompts),
            [names.index(r.label) for r in labelled],
            names,
        )
        zs["prompts"] = prompts
        result["zero_shot"] = zs
    return result


def evaluate_models(
    models: Mapping[str, str | Path],
    manifest: str | Path,
    test_files: Sequence[str | Path],
    out_dir: str | Path,
    split: str = "test",
    fmt: str = "auto",
    cfg: EvalConfig | None = None,
    answerers: Mapping[str, Callable[[Sequence[EvalItem]], list[str]]] | None = None,
) -> dict[str, Any]:
    """Answer and score the test items with every model (name -> model folder) and every
    model-free ``answerers`` entry (name -> function of the items, e.g. the majority baseline
    of :mod:`hwsi_model.evaluation.majority`), in that order.

    Writes ``predictions/<name>.jsonl`` (one row per item: question, reference, answer, parsed
    value, correct) under ``out_dir``; returns ``{"items": [...], "answers": {name: [...]},
    "families": {name: score_items(...)}, "tables": {name: {family: ItemTable}}, "left_out":
    {"items": n, "slides": [...]}}`` (``tables``: the per-item scores for intervals over slides,
    :mod:`hwsi_model.evaluation.statistics`; ``left_out``: the test items whose slide is not in
    the manifest split, e.g. excluded after a failure).
    """
    cfg = cfg or EvalConfig()
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    store = SlideStore(read_manifest(manifest, splits=[split]))
    items = [e for f in test_files for e in read_test_set(f, fmt)]
    dropped = [e for e in items if e.item.slide_id not in store]
    if dropped:
        log.warning(
            "%d of %d test items have no slide in split %r of %s; left out",
            len(dropped), len(items), split, manifest,
        )  # fmt: skip
    items = [e for e in items if e.item.slide_id in store]
    if not items:
        raise EvaluationInputError(
            f"no test item has a slide in split {split!r} of {manifest}; check "
            "evaluation.split and the test files' slide ids"
        )
    answers: dict[str, list[str]] = {}
    families: dict[str, dict] = {}
    tables: dict[str, dict] = {}

    def score(name: str, given: list[str]) -> None:
        answers[name] = given
        families[name], tables[name] = score_items_and_tables(items, given, cfg.bertscore_model)
        with open(out / "predictions" / f"{name}.jsonl", "w") as f:
            for e, a in zip(items, given, strict=True):
                f.write(json.dumps(e.record(a)) + "\n")

    for name, model_dir in models.items():
        log.info("evaluating %s (%s) on %d items, %s", name, model_dir, len(items), device)
        model = load_model_folder(model_dir).to(device)
        score(name, answer_items(model, store, items, cfg))
        del model
    for name, answer_all in (answerers or {}).items():
        log.info("evaluating %s (no model) on %d items", name, len(items))
        score(name, list(answer_all(items)))
    left_out = sorted({e.item.slide_id for e in dropped})
    return {"items": items, "answers": answers, "families": families, "tables": tables,
            "left_out": {"items": len(dropped), "slides": left_out}}  # fmt: skip
