"""Test-set items of the benchmarks mapped to task families, and their scoring.

==================  ======  ==============================================================
family              group   items and how an answer is scored
==================  ======  ==============================================================
``multiple_choice`` closed  options A, B, ... (WSI-Bench choice files, SlideBench TCGA/BCNB,
                            WSI-VQA with ``Choice``, demo): :func:`parse_option_letter`
``true_false``      closed  options exactly yes/no or true/false, or a reference that is
                            ``Yes``/``No``/``True``/``False`` (WSI-Bench ``*_TF_*`` files):
                            the option letter, else a leading yes/no (:func:`parse_yes_no`);
                            targets and parsed answers are booleans
``classification``  closed  a label out of a fixed label set (:func:`label_items`, e.g. the
                            sample sheet's ``label``): :func:`parse_label`
``open_question``   open    every other question (WSI-Bench test JSONL, WSI-VQA open items,
                            demo open questions): BLEU/ROUGE-L/METEOR(/BERTScore)
``caption``         open    SlideBench-Caption (a CSV/JSON of ``Slide``, ``Caption``), or
                            items whose task names a caption
``report``          open    report writing (task names a report, e.g. the demo's ``report``
                            items, WSI-Bench report files)
==================  ======  ==============================================================

Closed answers are parsed strictly (:mod:`hwsi_model.evaluation.parsing`); an unparsed
answer is wrong and counted. Readers are those of :mod:`hwsi_model.data.text_records`
(``wsibench``, ``wsibench_test``, ``slideinstruct``, ``slidebench``, ``wsivqa``, ``demo``)
plus ``slidebench_caption`` here.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsi_model.data.text_records import (
    InstructionItem,
    _load_records,
    read_instructions,
    read_reports,
)
from hwsi_model.evaluation import metrics
from hwsi_model.evaluation.parsing import (
    LETTERS,
    normalize_label,
    parse_label,
    parse_option_letter,
    parse_yes_no,
)
from hwsi_model.evaluation.statistics import ItemTable, closed_table, open_table

log = logging.getLogger(__name__)

MULTIPLE_CHOICE, TRUE_FALSE, CLASSIFICATION = "multiple_choice", "true_false", "classification"
OPEN_QUESTION, CAPTION, REPORT = "open_question", "caption", "report"
CLOSED_FAMILIES = (MULTIPLE_CHOICE, TRUE_FALSE, CLASSIFICATION)
OPEN_FAMILIES = (OPEN_QUESTION, CAPTION, REPORT)
FAMILIES = CLOSED_FAMILIES + OPEN_FAMILIES

#: Prompt of SlideBench-Caption items read from a caption table.
CAPTION_PROMPT = "Please describe this whole-slide image in detail."
_YES_NO = ({"yes", "no"}, {"true", "false"})


@dataclass
class EvalItem:
    """One test item with its family and what a correct answer is.

    ``item`` is the reader's :class:`InstructionItem` (question with options, reference
    answer text, option letter); ``labels`` is the label set of a classification item, whose
    reference label is ``item.answer``.
    """

    item: InstructionItem
    family: str
    benchmark: str = ""
    labels: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        """``"closed"`` or ``"open"``."""
        return "closed" if self.family in CLOSED_FAMILIES else "open"

    @property
    def n_options(self) -> int:
        """Number of choices (2 for yes/no without options, label count, 0 for open)."""
        if self.family == CLASSIFICATION:
            return len(self.labels)
        if self.item.options:
            return len(self.item.options)
        return 2 if self.family == TRUE_FALSE else 0

    @property
    def target(self) -> str | bool:
        """Correct letter, boolean (yes/no without options), label, or reference text."""
        it = self.item
        if self.family == CLASSIFICATION:
            return it.answer
        if self.family == TRUE_FALSE:
            text = it.options[LETTERS.index(str(it.answer_letter))] if it.options else it.answer
            return bool(parse_yes_no(text))
        if self.family == MULTIPLE_CHOICE:
            return str(it.answer_letter)
        return it.answer

    def parse(self, answer: str) -> str | bool | None:
        """The strictly parsed closed answer (``None``: unparsed); open items: the text."""
        opts = self.item.options
        if self.family == CLASSIFICATION:
            return parse_label(answer, self.labels)
        if self.family == TRUE_FALSE:  # the option letter, else a leading yes/no
            letter = parse_option_letter(answer, len(opts), opts) if opts else None
            return parse_yes_no(opts[LETTERS.index(letter)] if letter else answer)
        if self.family == MULTIPLE_CHOICE:
            return parse_option_letter(answer, len(opts), opts)
        return answer

    def record(self, answer: str) -> dict[str, Any]:
        """One JSON-ready prediction row: ids, family, question, reference, answer, parsed,
        correct (closed items; ``None`` for open ones)."""
        parsed = self.parse(answer)
        closed = self.group == "closed"
        return {
            "id": self.item.id,
            "slide_id": self.item.slide_id,
            "benchmark": self.benchmark,
            "family": self.family,
            "task": self.item.task,
            "question": self.item.question,
            "reference": self.item.answer,
            "answer": answer,
            "target": self.target if closed else None,
            "parsed": parsed if closed else None,
            "correct": (parsed is not None and parsed == self.target) if closed else None,
        }


def family_of(item: InstructionItem) -> str:
    """Task family of a reader's item (see the module table)."""
    if item.is_closed:
        opts = {normalize_label(o) for o in item.options}
        return TRUE_FALSE if opts in _YES_NO else MULTIPLE_CHOICE
    if normalize_label(item.answer) in ("yes", "no", "true", "false"):
        return TRUE_FALSE
    task = item.task.lower()
    if "report" in task:
        return REPORT
    if "caption" in task:
        return CAPTION
    return OPEN_QUESTION


def to_eval_items(
    items: Iterable[InstructionItem], benchmark: str = "", open_family: str | None = None
) -> list[EvalItem]:
    """Reader items -> :class:`EvalItem`; ``open_family`` forces the family of open items
    (e.g. :data:`CAPTION` for a caption benchmark in conversation format)."""
    if open_family is not None and open_family not in OPEN_FAMILIES:
        raise ValueError(f"open_family must be one of {OPEN_FAMILIES}, got {open_family!r}")
    out = []
    for it in items:
        fam = family_of(it)
        if open_family and fam in OPEN_FAMILIES:
            fam = open_family
        out.append(EvalItem(it, fam, benchmark))
    return out


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def read_caption_items(path: str | Path, prompt: str = CAPTION_PROMPT) -> list[InstructionItem]:
    """SlideBench-Caption style table (CSV/JSON/JSONL with ``Slide``/``slide_id`` and
    ``Caption``/``report``): one caption item per slide, the caption as reference."""
    return [
        InstructionItem(
            slide_id=r.slide_id,
            question=prompt,
            answer=r.report,
            id=f"{r.slide_id}_caption",
            task="caption",
        )
        for r in read_reports(path)
    ]


def detect_format(path: str | Path) -> str:
    """Reader name for a test file: CSV with ``Caption`` and no ``Question`` column ->
    ``slidebench_caption``, other CSV -> ``slidebench``; JSON(L) records with
    ``conversations`` -> ``wsibench``, with ``T-answer``/``question_id`` -> ``wsibench_test``,
    with a report/caption text and no question -> ``slidebench_caption``, else ``wsivqa``."""
    path = Path(path)
    if path.suffix == ".csv":
        header = {h.lower() for h in _csv_header(path)}
        if "question" not in header and "caption" in header:
            return "slidebench_caption"
        return "slidebench"
    recs = _load_records(path)
    first = recs[0] if recs else {}
    if "conversations" in first:
        return "wsibench"
    if "T-answer" in first or "question_id" in first:
        return "wsibench_test"
    keys = {k.lower() for k in first}
    if "question" not in keys and keys & {"caption", "report"}:
        return "slidebench_caption"
    return "wsivqa"


def _benchmark_name(path: Path, fmt: str) -> str:
    name = path.name.lower()
    if fmt == "slidebench":
        return "slidebench_bcnb" if "bcnb" in name else "slidebench_tcga"
    return fmt


def read_test_set(
    path: str | Path,
    fmt: str = "auto",
    benchmark: str | None = None,
    open_family: str | None = None,
) -> list[EvalItem]:
    """Test items of ``path`` with their families.

    Args:
        path: a test file of WSI-Bench (conversation JSON or test JSONL), SlideBench (VQA CSV
            of TCGA or BCNB, or a caption table), WSI-VQA, or our demo ``vqa/test.json``.
        fmt: a reader name of :data:`hwsi_model.data.text_records.READERS`,
            ``slidebench_caption``, or ``auto`` (a CSV with a ``Caption`` column and no
            ``Question`` -> caption; otherwise :func:`read_instructions` decides).
        benchmark: name recorded on each item (default: from ``fmt`` and the file name).
        open_family: force the family of open items (see :func:`to_eval_items`); by default
            open items of a conversation/test-JSONL file whose name says ``report`` or
            ``caption`` (WSI-Bench ``1_Report_test.json``) are of that family.

    Items without a task get the file name's stem without ``_test`` as task (WSI-Bench keeps
    one task per file, e.g. ``Diagnosis_choice``), for accuracy per task.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "slidebench_caption":
        items = read_caption_items(path)
        open_family = open_family or CAPTION
    else:
        items = read_instructions(path, fmt)
    stem = re.sub(r"[_-]?test$", "", path.stem.split(".")[0], flags=re.IGNORECASE)
    for it in items:  # WSI-Bench's per-task files carry the task in their name only
        it.task = it.task or stem
    if open_family is None and fmt in ("wsibench", "slideinstruct", "wsibench_test"):
        name = path.name.lower()
        open_family = REPORT if "report" in name else CAPTION if "caption" in name else None
    out = to_eval_items(items, benchmark or _benchmark_name(path, fmt), open_family)
    counts = defaultdict(int)
    for e in out:
        counts[e.family] += 1
    log.info("%s: %d items (%s)", path.name, len(out), dict(counts))
    return out


def label_items(
    slides: Iterable[tuple[str, str]],
    labels: Sequence[str],
    question: str | None = None,
    benchmark: str = "labels",
) -> list[EvalItem]:
    """Classification items from (slide_id, label) pairs, e.g. a sample sheet's ``label``.

    The question lists the labels (as written in ``labels``); the answer must name one.
    """
    labels = list(labels)
    q = question or (
        "What is the diagnosis of this slide? Answer with one of: " + ", ".join(labels) + "."
    )
    out = []
    for sid, label in slides:
        if label not in labels:
            raise ValueError(f"slide {sid}: label {label!r} is not in {labels}")
        it = InstructionItem(
            slide_id=sid,
            question=q,
            answer=label,
            id=f"{sid}_label",
            question_type="label",
            task="classification",
        )
        out.append(EvalItem(it, CLASSIFICATION, benchmark, labels))
    return out


def by_family(items: Iterable[EvalItem]) -> dict[str, list[int]]:
    """Indices of the items of each family, families in :data:`FAMILIES` order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(items):
        groups[e.family].append(i)
    return {f: groups[f] for f in FAMILIES if f in groups}


def score_items(
    items: Sequence[EvalItem],
    answers: Sequence[str],
    bertscore_model: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per family for one model's answers (one answer per item).

    Returns ``{family: {"metrics": {...}, "n", "unparsed", "chance"[, "per_task",
    "confusion"]}}``: closed families have ``metrics = {"accuracy"}``, the chance level, the
    unparsed count, accuracy per task and a confusion matrix (letters, yes/no or labels);
    open families have the metrics of :func:`metrics.open_text_metrics`, ``chance: None``
    and ``unparsed`` = the number of empty answers. This is the per-family shape that
    :func:`hwsi_model.evaluation.report_html.write_metrics_json` writes.
    """
    return score_items_and_tables(items, answers, bertscore_model)[0]


def score_items_and_tables(
    items: Sequence[EvalItem],
    answers: Sequence[str],
    bertscore_model: str | Path | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, ItemTable]]:
    """:func:`score_items` and, per family, the per-item scores its metrics are sums of
    (:class:`~hwsi_model.evaluation.statistics.ItemTable`, rows in the family's item order of
    :func:`by_family`), for intervals over slides."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    out: dict[str, dict[str, Any]] = {}
    tables: dict[str, ItemTable] = {}
    for fam, idx in by_family(items).items():
        its = [items[i] for i in idx]
        ans = [answers[i] or "" for i in idx]
        slides = [e.item.slide_id for e in its]
        if fam in CLOSED_FAMILIES:
            parsed = [e.parse(a) for e, a in zip(its, ans, strict=True)]
            targets = [e.target for e in its]
            acc = metrics.closed_accuracy(
                parsed, targets, [e.n_options for e in its], [e.item.task for e in its]
            )
            if fam == CLASSIFICATION:
                labels: list = list(dict.fromkeys(lab for e in its for lab in e.labels))
            elif fam == TRUE_FALSE:
                labels = [True, False]
            else:
                labels = list(LETTERS[: max(e.n_options for e in its)])
            out[fam] = {
                "metrics": {"accuracy": acc["accuracy"]},
                "n": acc["n"],
                "unparsed": acc["unparsed"],
                "chance": acc["chance"],
                "per_task": acc["per_task"],
                "confusion": metrics.confusion_matrix(parsed, targets, labels),
            }
            correct = [p is not None and p == t for p, t in zip(parsed, targets, strict=True)]
            tables[fam] = closed_table(slides, correct)
        else:
            empty = sum(not a.strip() for a in ans)
            means, counts, info = metrics.open_text_item_values(
                ans, [e.item.answer for e in its], bertscore_model
            )
            tables[fam] = open_table(slides, means, counts)
            m: dict[str, Any] = {**tables[fam].point(), **info}
            out[fam] = {"metrics": m, "n": len(its), "unparsed": empty, "chance": None}
    return out, tables
