"""Metrics of the task families, each from a maintained package where a standard one exists.

Closed questions (:func:`closed_accuracy`, :func:`confusion_matrix`): exact accuracy over the
strictly parsed answers (:mod:`hwsi_model.evaluation.parsing`); an unparsed answer (``None``)
counts as wrong and is counted in ``unparsed``; chance level is the mean of ``1 / n_options``.

Open text (:func:`open_text_metrics`), hypotheses against one reference each:

- **BLEU-1..4**: ``nltk.translate.bleu_score.corpus_bleu`` with the cumulative weights
  ``(1,)``, ``(1/2, 1/2)``, ``(1/3, 1/3, 1/3)``, ``(1/4,) * 4``, no smoothing, one brevity
  penalty over the corpus (Papineni et al.; clipped n-gram counts summed over all items, not
  a mean of sentence scores). A BLEU-n whose n-gram matches are all zero is 0. The tests
  check it against ``sacrebleu`` (``max_ngram_order=n``, no smoothing, same tokens). Papers
  that average smoothed sentence BLEU (e.g. the WSI-LLaVA scripts) report other numbers.
- **ROUGE-L**: ``rouge_score.RougeScorer(["rougeL"], use_stemmer=True)`` F-measure, mean
  over items.
- **METEOR**: ``nltk.translate.meteor_score.meteor_score`` (alpha 0.9, beta 3, gamma 0.5),
  mean over items. Its synonym stage needs the WordNet corpus, which is data, not a package;
  where ``nltk.corpus.wordnet`` cannot be loaded METEOR runs with exact and Porter-stem
  matching only (a WordNet stand-in without synonyms) and the result says
  ``meteor_synonyms: false``; scores are then slightly lower than with WordNet.
- **BERTScore** (``bert-score``): only when a local model folder is given (no download);
  P/R/F1 means, ``bertscore_model`` records which model.

All text metrics see the same tokens (:func:`tokenize`): lower case, runs of word characters
and single punctuation marks (``"High-grade."`` -> ``high``, ``-``, ``grade``, ``.``); NLTK's
Punkt tokenizer is data that cannot be downloaded here, and one fixed rule keeps the metrics
comparable between runs.

Retrieval (:func:`retrieval_metrics`): recall@1/5/10 and mean reciprocal rank from a
similarity matrix; ties are broken against the query (a tie with the true item counts as
ranked above it). Zero-shot classification (:func:`zero_shot_accuracy`): argmax of cosine
similarity to class-prompt embeddings.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+|[^\w\s]")
BLEU_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (1 / 2, 1 / 2),
    (1 / 3, 1 / 3, 1 / 3),
    (1 / 4, 1 / 4, 1 / 4, 1 / 4),
)
UNPARSED = "unparsed"


def tokenize(text: str) -> list[str]:
    """Lower-case tokens: runs of word characters and single punctuation marks."""
    return _TOKEN.findall(text.lower())


# -- closed questions -------------------------------------------------------------------------


def closed_accuracy(
    predictions: Sequence[Any | None],
    targets: Sequence[Any],
    n_options: Sequence[int],
    tasks: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy of strictly parsed closed answers, with unparsed count and chance level.

    Args:
        predictions: parsed answers (letters, booleans or labels), ``None`` = unparsed.
        targets: correct answers, same kind as ``predictions``.
        n_options: number of choices of each item (2 for yes/no); chance = mean of 1 / n.
        tasks: optional task name of each item, for ``per_task``.

    Returns:
        ``{"accuracy", "n", "correct", "unparsed", "chance", "per_task": {task: {accuracy, n,
        unparsed, chance}}}``; accuracy and chance are ``None`` when ``n == 0``.
    """
    n = len(predictions)
    if not (len(targets) == len(n_options) == n) or (tasks is not None and len(tasks) != n):
        raise ValueError("predictions, targets, n_options (and tasks) must have one entry each")
    if any(k < 1 for k in n_options):
        raise ValueError("every item needs at least one option")

    def summary(idx: list[int]) -> dict[str, Any]:
        correct = sum(predictions[i] is not None and predictions[i] == targets[i] for i in idx)
        m = len(idx)
        return {
            "accuracy": correct / m if m else None,
            "n": m,
            "correct": int(correct),
            "unparsed": sum(predictions[i] is None for i in idx),
            "chance": float(np.mean([1.0 / n_options[i] for i in idx])) if m else None,
        }

    out = summary(list(range(n)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks or []):
        groups[t or "?"].append(i)
    out["per_task"] = {t: summary(idx) for t, idx in sorted(groups.items())}
    return out


def confusion_matrix(
    predictions: Sequence[Any | None], targets: Sequence[Any], labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Confusion matrix of closed answers: rows = target, columns = prediction.

    ``labels`` (default: sorted targets and predictions) name the rows and the first columns;
    the last column counts unparsed answers (``None``) and predictions outside ``labels``.

    Returns:
        ``{"labels": [L], "columns": [L + "unparsed"], "matrix": [[int] * (L + 1)] * L}``.
    """
    if len(predictions) != len(targets):
        raise ValueError("predictions and targets must have the same length")
    if labels is None:
        labels = sorted({*targets, *(p for p in predictions if p is not None)}, key=str)
    index = {label: i for i, label in enumerate(labels)}
    m = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for p, t in zip(predictions, targets, strict=True):
        if t not in index:
            raise ValueError(f"target {t!r} is not among the labels {list(labels)}")
        m[index[t], index.get(p, len(labels)) if p is not None else len(labels)] += 1
    return {
        "labels": [str(x) for x in labels],
        "columns": [str(x) for x in labels] + [UNPARSED],
        "matrix": m.tolist(),
    }


# -- open text --------------------------------------------------------------------------------


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError("one reference per hypothesis is needed")
    if not hypotheses:
        raise ValueError("no hypotheses")


#: Columns of :func:`bleu_counts`: clipped n-gram matches and hypothesis n-grams (n = 1..4),
#: hypothesis length, reference length.
BLEU_COUNT_COLUMNS = (
    *(f"match{n}" for n in range(1, 5)), *(f"total{n}" for n in range(1, 5)), "hyp_len", "ref_len"
)  # fmt: skip


def bleu_counts(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per item, the counts corpus BLEU sums (:data:`BLEU_COUNT_COLUMNS`): ``[N, 10] int64``.

    Corpus BLEU is a function of these counts summed over items (:func:`bleu_from_counts`),
    which is what lets a bootstrap over slides resample it without re-scoring text.
    """
    from nltk.translate.bleu_score import modified_precision

    _check_pairs(hypotheses, references)
    out = np.zeros((len(hypotheses), len(BLEU_COUNT_COLUMNS)), dtype=np.int64)
    for i, (h, r) in enumerate(zip(hypotheses, references, strict=True)):
        hyp, ref = tokenize(h), tokenize(r)
        for n in range(1, 5):
            p = modified_precision([ref], hyp, n)  # Fraction(_normalize=False): raw counts
            out[i, n - 1], out[i, 3 + n] = p.numerator, p.denominator
        out[i, 8], out[i, 9] = len(hyp), len(ref)
    return out


def bleu_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Cumulative BLEU-1..4 from summed :func:`bleu_counts` (``[..., 10]`` -> ``[...]`` each),
    as ``nltk``'s ``corpus_bleu`` computes them without smoothing: one brevity penalty, and a
    BLEU-n whose matches of some order <= n are zero is 0."""
    c = np.asarray(counts, dtype=np.float64)
    match, total = c[..., 0:4], np.maximum(c[..., 4:8], 1.0)
    hyp_len, ref_len = c[..., 8], c[..., 9]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(hyp_len > ref_len, 1.0, np.exp(1.0 - ref_len / np.maximum(hyp_len, 1.0)))
        bp = np.where(hyp_len == 0, 0.0, bp)
        logp = np.log(np.where(match > 0, match / total, 1.0))
    out = {}
    for n in range(1, 5):
        zero = (match[..., :n] == 0).any(axis=-1)
        out[f"bleu{n}"] = np.where(zero, 0.0, bp * np.exp(logp[..., :n].mean(axis=-1)))
    return out


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (cumulative, no smoothing): ``{"bleu1": .., ..., "bleu4": ..}``."""
    summed = bleu_counts(hypotheses, references).sum(axis=0)
    return {k: float(v) for k, v in bleu_from_counts(summed).items()}


def rouge_l_items(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure of each item (``rouge-score``, Porter stemmer): ``[N] float64``."""
    from rouge_score import rouge_scorer

    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array(
        [
            scorer.score(r, h)["rougeL"].fmeasure
            for h, r in zip(hypotheses, references, strict=True)
        ],
        dtype=np.float64,
    )


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (``rouge-score``, Porter stemmer)."""
    return float(rouge_l_items(hypotheses, references).mean())


class _NoSynonyms:
    """WordNet stand-in for METEOR: no synsets, so only exact and stem matches count."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


@cache
def _wordnet() -> tuple[Any, bool]:
    """(WordNet reader or stand-in, whether synonyms are available)."""
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("tumour")
        return wordnet, True
    except LookupError:
        log.info("NLTK WordNet data not installed: METEOR without synonym matching")
        return _NoSynonyms(), False


def meteor_items(
    hypotheses: Sequence[str], references: Sequence[str], synonyms: bool | None = None
) -> tuple[np.ndarray, bool]:
    """METEOR of each item (``[N] float64``) and whether WordNet synonyms were used.

    ``synonyms=None`` uses WordNet where it is installed; ``False`` forces exact + stem only.
    """
    from nltk.translate.meteor_score import meteor_score

    _check_pairs(hypotheses, references)
    wn, available = _wordnet()
    use = available if synonyms is None else (synonyms and available)
    if synonyms and not available:
        log.warning("METEOR synonyms asked for, but the WordNet corpus is not installed")
    wordnet = wn if use else _NoSynonyms()
    scores = [
        meteor_score([tokenize(r)], tokenize(h), wordnet=wordnet)
        for h, r in zip(hypotheses, references, strict=True)
    ]
    return np.array(scores, dtype=np.float64), bool(use)


def meteor(
    hypotheses: Sequence[str], references: Sequence[str], synonyms: bool | None = None
) -> tuple[float, bool]:
    """Mean METEOR over items and whether WordNet synonyms were used (:func:`meteor_items`)."""
    scores, used = meteor_items(hypotheses, references, synonyms)
    return float(scores.mean()), used


def bertscore_items(
    hypotheses: Sequence[str],
    references: Sequence[str],
    model_path: str | Path,
    num_layers: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """BERTScore P/R/F1 of each item (``bertscore_p``/``_r``/``_f1``: ``[N] float64``) with
    the local model folder ``model_path`` (never downloads), and the layer compared.

    ``num_layers``: the hidden layer whose states are compared (default: the model's last).
    """
    import os

    from bert_score import score
    from transformers import AutoConfig

    _check_pairs(hypotheses, references)
    path = Path(model_path)
    if not path.is_dir():
        raise FileNotFoundError(f"BERTScore model folder not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if num_layers is None:
        num_layers = int(AutoConfig.from_pretrained(str(path)).num_hidden_layers)
    p, r, f = score(
        list(hypotheses),
        list(references),
        model_type=str(path),
        num_layers=num_layers,
        batch_size=batch_size,
        device=device or "cpu",
        lang=None,
        verbose=False,
    )
    values = {"bertscore_p": p, "bertscore_r": r, "bertscore_f1": f}
    return {k: v.double().numpy() for k, v in values.items()}, num_layers


def bertscore(
    hypotheses: Sequence[str],
    references: Sequence[str],
    model_path: str | Path,
    num_layers: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> dict[str, Any]:
    """Mean BERTScore P/R/F1 (:func:`bertscore_items`), with the model's name and layer."""
    values, layer = bertscore_items(
        hypotheses, references, model_path, num_layers, batch_size, device
    )
    out: dict[str, Any] = {k: float(v.mean()) for k, v in values.items()}
    return {**out, "bertscore_model": Path(model_path).name, "bertscore_layer": layer}


def open_text_item_values(
    hypotheses: Sequence[str],
    references: Sequence[str],
    bertscore_model: str | Path | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """What the open-text metrics are made of, per item: ``(means, bleu, info)`` with
    ``means`` = metric -> ``[N]`` values whose mean is the metric (``rouge_l``, ``meteor``,
    ``bertscore_*``), ``bleu`` = :func:`bleu_counts` ``[N, 10]``, and ``info`` =
    ``meteor_synonyms`` (+ ``bertscore_model``, ``bertscore_layer``)."""
    means = {"rouge_l": rouge_l_items(hypotheses, references)}
    means["meteor"], synonyms = meteor_items(hypotheses, references)
    info: dict[str, Any] = {"meteor_synonyms": synonyms}
    if bertscore_model is not None:
        values, layer = bertscore_items(hypotheses, references, bertscore_model)
        means.update(values)
        info.update(bertscore_model=Path(bertscore_model).name, bertscore_layer=layer)
    return means, bleu_counts(hypotheses, references), info


def open_text_metrics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    bertscore_model: str | Path | None = None,
) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-L, METEOR (+ ``meteor_synonyms``), BERTScore where a model is given.

    Returns ``{"bleu1".."bleu4", "rouge_l", "meteor", "meteor_synonyms", "n"[, "bertscore_*"]}``.
    """
    means, counts, info = open_text_item_values(hypotheses, references, bertscore_model)
    out: dict[str, Any] = {k: float(v) for k, v in bleu_from_counts(counts.sum(axis=0)).items()}
    out.update({k: float(v.mean()) for k, v in means.items()})
    out.update(info)
    out["n"] = len(hypotheses)
    return out


# -- retrieval and zero-shot ------------------------------------------------------------------


def retrieval_metrics(
    similarity: np.ndarray, targets: Sequence[int] | np.ndarray | None = None
) -> dict[str, float]:
    """Recall@1/5/10 and MRR of queries (rows) against candidates (columns).

    Args:
        similarity: ``[Q, C]`` scores, higher = more similar (e.g. slide x report cosines).
        targets: ``[Q]`` index of each query's true candidate (default: the diagonal).

    Returns:
        ``{"r1", "r5", "r10", "mrr", "n", "chance_r1"}``; the rank of the true candidate is
        1 + the number of candidates scoring at least as high (ties count against it).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] == 0:
        raise ValueError(f"similarity must be a non-empty [Q, C] matrix, got {sim.shape}")
    q = sim.shape[0]
    t = np.arange(q) if targets is None else np.asarray(targets, dtype=np.int64)
    if t.shape != (q,) or t.min() < 0 or t.max() >= sim.shape[1]:
        raise ValueError("targets must give one candidate column per query")
    true = sim[np.arange(q), t]
    rank = (sim >= true[:, None]).sum(1)  # counts the true candidate itself: rank >= 1
    return {
        "r1": float((rank <= 1).mean()),
        "r5": float((rank <= 5).mean()),
        "r10": float((rank <= 10).mean()),
        "mrr": float((1.0 / rank).mean()),
        "n": int(q),
        "chance_r1": 1.0 / sim.shape[1],
    }


def zero_shot_accuracy(
    slide_embeddings: np.ndarray,
    class_embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero-shot classification: each slide gets the class whose prompt embedding is nearest.

    Args:
        slide_embeddings: ``[N, A]`` slide embeddings in the alignment space.
        class_embeddings: ``[K, A]`` class-prompt embeddings (e.g. the mean over a class's
            prompts); both are L2-normalised here, so the score is cosine similarity.
        labels: ``[N]`` true class index of each slide.
        class_names: optional ``K`` names for the confusion matrix.

    Returns:
        ``{"accuracy", "balanced_accuracy", "n", "chance": 1/K, "predictions": [N],
        "confusion": confusion_matrix(...)}``.
    """
    s = np.asarray(slide_embeddings, dtype=np.float64)
    c = np.asarray(class_embeddings, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if s.ndim != 2 or c.ndim != 2 or s.shape[1] != c.shape[1] or y.shape != (len(s),):
        raise ValueError("need slide [N, A], class [K, A] embeddings and [N] labels")
    s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    pred = (s @ c.T).argmax(1)
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(c))]
    per_class = [float((pred[y == k] == k).mean()) for k in range(len(c)) if (y == k).any()]
    return {
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "balanced_accuracy": float(np.mean(per_class)) if per_class else None,
        "n": len(y),
        "chance": 1.0 / len(c),
        "predictions": pred.tolist(),
        "confusion": confusion_matrix(
            [names[p] for p in pred], [names[k] for k in y], labels=names
        ),
    }
