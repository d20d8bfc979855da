"""Readers of WSI-report pairs and instruction (VQA) items in the formats our users have.

Every reader returns plain records joined later to the cohort manifest by ``slide_id``:

- :class:`ReportRecord` (stages 1-2): our demo ``reports.jsonl``; any JSON/JSONL list or CSV
  with ``slide_id`` (or ``id``/``slide``) and ``report`` (or ``text``/``caption``) fields.
- :class:`InstructionItem` (stage 3), one question-answer turn:

  ==================  ======================================================================
  format              shape
  ==================  ======================================================================
  ``wsibench``        WSI-Bench / LLaVA JSON list or JSONL: ``id``, ``image``, ``conversations``
                      ``[{from: human, value: "<image>\\n..."}, {from: gpt, value}]``; our demo
                      adds ``slide_id``, ``question_type``, ``options``, ``answer`` (a letter)
  ``slideinstruct``   SlideChat SlideInstruction JSON: LLaVA conversations with ``image`` a list
                      of feature files (``./TCGA-....csv``)
  ``slidebench``      SlideChat SlideBench-VQA CSV: ``Slide``, ``Question``, ``A``..``D``,
                      ``Answer`` (a letter), optional ``Task``/``Broad Category``
  ``wsivqa``          WSI-VQA JSON list: ``Id``, ``Question``, ``Answer``, ``Choice`` (list; empty
                      for open questions, else the answer is one of the choices' texts)
  ``wsibench_test``   WSI-Bench test JSONL: ``question_id``, ``image``, ``question``,
                      ``T-answer`` (reference), ``metadata`` (task)
  ==================  ======================================================================

Multi-turn conversations become one item per (human, gpt) turn, each with the slide and the
earlier turns (``history``); training takes each conversation once (:func:`whole_conversations`,
loss on every assistant turn), evaluation answers turn by turn. The ``<image>`` placeholder is
removed from the question text: the model's prompt puts it back.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwsi_model.errors import HwsiError

LETTERS = "ABCDEFGHIJ"
_IMAGE_TAG = re.compile(r"\s*<image>\s*", re.IGNORECASE)


class DataFormatError(HwsiError):
    """A report or instruction file does not have the expected fields."""


@dataclass
class ReportRecord:
    """One WSI-report pair (a report may also be a caption)."""

    slide_id: str
    report: str
    label: str | None = None
    facts: dict | None = None  # ground-truth facts (hwsi_model.evaluation.facts), if known


@dataclass
class InstructionItem:
    """One question-answer turn about a slide.

    ``options`` are the choice texts (without letters) of a closed question and ``answer_letter``
    the correct letter; ``answer`` is the target text the LLM learns to produce. A turn of a
    multi-turn conversation carries the earlier turns as ``history`` ((question, answer) pairs)
    and the conversation's id as ``conversation``.
    """

    slide_id: str
    question: str
    answer: str
    id: str = ""
    question_type: str = "open"
    task: str = ""
    options: list[str] = field(default_factory=list)
    answer_letter: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    conversation: str = ""

    @property
    def is_closed(self) -> bool:
        return self.question_type == "closed" and bool(self.options)


def whole_conversations(items: Sequence[InstructionItem]) -> list[InstructionItem]:
    """One item per conversation for training: the last turn of each (its ``history`` holds
    the others, so every assistant turn is trained once); single turns stay as they are."""
    last: dict[tuple[str, str], int] = {}
    for it in items:
        if it.conversation:
            key = (it.slide_id, it.conversation)
            last[key] = max(last.get(key, 0), len(it.history))
    return [
        it
        for it in items
        if not it.conversation or len(it.history) == last[(it.slide_id, it.conversation)]
    ]


# -- helpers ----------------------------------------------------------------------------------


def _load_records(path: str | Path) -> list[dict]:
    """A JSON list, a JSON object holding one list, or JSONL."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataFormatError(f"{path}: expected a JSON list of records")
        data = lists[0]
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of records")
    return data


def _read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(f)
        ]


def _first(record: dict, keys: Iterable[str], what: str, path: str | Path) -> str:
    for k in keys:
        if record.get(k) not in (None, ""):
            return str(record[k])
    raise DataFormatError(f"{path}: a record has no {what} (looked for {list(keys)})")


def slide_id_from_image(image: str | list | None) -> str:
    """``"TCGA-XX.svs"`` / ``["./TCGA-XX.csv"]`` / ``"a/b/TCGA-XX.tiff"`` -> ``"TCGA-XX"``."""
    if isinstance(image, list):
        image = image[0] if image else None
    if not image:
        return ""
    name = Path(str(image)).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def strip_image_tag(text: str) -> str:
    return _IMAGE_TAG.sub("\n", text).strip()


_INLINE_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-J])\)\s+")


def parse_options(question: str) -> list[str]:
    """Choice texts of lines ``A) text`` / ``A. text`` / ``(A) text`` in a question, or of
    options on one line, ``"... tumour? A) x B) y C) z"`` (WSI-Bench choice files: at least two
    options, letters ``A``, ``B``, ... in order, each with a closing parenthesis)."""
    found = re.findall(r"^\s*\(?([A-J])[).:]\s+(.+?)\s*$", question, flags=re.MULTILINE)
    letters = [f[0] for f in found]
    if letters and letters == list(LETTERS[: len(letters)]):
        return [f[1] for f in found]
    # The marks A), B), C) ... in order; a letter mark inside an option's own text (the "I)" of
    # "Undifferentiated (Grade I)") is not the next letter and stays part of that text.
    marks = []
    for m in _INLINE_OPTION.finditer(question):
        if m.group(1) == LETTERS[len(marks)]:
            marks.append(m)
            if len(marks) == len(LETTERS):
                break
    if len(marks) < 2:
        return []
    ends = [m.start() for m in marks[1:]] + [len(question)]
    return [question[m.end() : e].strip() for m, e in zip(marks, ends, strict=True)]


# -- reports ----------------------------------------------------------------------------------


def read_reports(path: str | Path) -> list[ReportRecord]:
    """WSI-report pairs from JSONL/JSON (our demo ``reports.jsonl``) or CSV."""
    path = Path(path)
    rows = _read_csv(path) if path.suffix == ".csv" else _load_records(path)
    out = []
    for r in rows:
        sid = _first(r, ("slide_id", "slide", "id", "Slide"), "slide id", path)
        text = _first(r, ("report", "text", "caption", "Caption"), "report text", path)
        facts = r.get("facts") if isinstance(r.get("facts"), dict) else None
        out.append(ReportRecord(sid, " ".join(text.split()), r.get("label"), facts))
    return out


# -- instruction formats ----------------------------------------------------------------------


def read_wsibench(path: str | Path) -> list[InstructionItem]:
    """WSI-Bench / LLaVA conversations (also our demo ``vqa/{split}.json`` and SlideInstruction)."""
    items = []
    for rec in _load_records(path):
        sid = str(rec.get("slide_id") or slide_id_from_image(rec.get("image")))
        if not sid:
            raise DataFormatError(f"{path}: record {rec.get('id')!r} names no slide")
        conv = rec.get("conversations") or []
        turns = [
            (conv[i]["value"], conv[i + 1]["value"])
            for i in range(0, len(conv) - 1, 2)
            if conv[i].get("from") in ("human", "user")
            and conv[i + 1].get("from") in ("gpt", "assistant")
        ]
        if not turns:
            raise DataFormatError(f"{path}: record {rec.get('id')!r} has no human/gpt turn")
        history: list[tuple[str, str]] = []
        for t, (question, answer) in enumerate(turns):
            q = strip_image_tag(question)
            options = list(rec.get("options") or []) if t == 0 else []
            options = options or parse_options(q)
            qtype = rec.get("question_type") if t == 0 else None
            qtype = qtype or ("closed" if options else "open")
            letter = rec.get("answer") if t == 0 and qtype == "closed" else None
            if qtype == "closed" and not (isinstance(letter, str) and len(letter) == 1):
                letter = _letter_of_answer(answer, options)
            if letter is None and qtype == "closed" and not rec.get("question_type"):
                qtype, options = "open", []  # option-like text, but the answer is no option
            items.append(
                InstructionItem(
                    slide_id=sid,
                    question=q,
                    answer=answer.strip(),
                    id=f"{rec.get('id', sid)}" + (f"_t{t}" if len(turns) > 1 else ""),
                    question_type=qtype,
                    task=str(rec.get("task") or ""),
                    options=options,
                    answer_letter=letter,
                    history=list(history),
                    conversation=str(rec.get("id", sid)) if len(turns) > 1 else "",
                )
            )
            history.append((q, answer.strip()))
    return items


def read_slideinstruct(path: str | Path) -> list[InstructionItem]:
    """SlideChat SlideInstruction (LLaVA conversations, ``image`` a list of feature files)."""
    return read_wsibench(path)


def _with_options(question: str, options: list[str]) -> str:
    lines = "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"{question}\n{lines}\nAnswer with the option's letter."


def _letter_of_answer(answer: str, options: list[str]) -> str | None:
    a = answer.strip()
    m = re.match(r"^\(?([A-J])\)?(?:[).:\s]|$)", a)
    if m and LETTERS.index(m.group(1)) < len(options):
        return m.group(1)
    low = [o.strip().lower().rstrip(".") for o in options]
    key = a.lower().rstrip(".")
    return LETTERS[low.index(key)] if key in low else None


def read_slidebench(path: str | Path) -> list[InstructionItem]:
    """SlideChat SlideBench-VQA CSV (closed questions, options ``A``..``D``, letter answer)."""
    items = []
    for i, r in enumerate(_read_csv(path)):
        sid = _first(r, ("Slide", "slide", "slide_id"), "slide id", path)
        q = _first(r, ("Question", "question"), "question", path)
        options = [r[k] for k in LETTERS[:10] if r.get(k)]
        letter = _letter_of_answer(_first(r, ("Answer", "answer"), "answer", path), options)
        if letter is None:
            raise DataFormatError(f"{path}: row {i + 2}: the answer is not one of the options")
        opt = options[LETTERS.index(letter)]
        items.append(
            InstructionItem(
                slide_id=sid,
                question=_with_options(q, options),
                answer=f"{letter}) {opt}.",
                id=str(r.get("ID") or r.get("id") or f"{sid}_{i}"),
                question_type="closed",
                task=r.get("Task") or r.get("Broad Category") or "",
                options=options,
                answer_letter=letter,
            )
        )
    return items


def read_wsivqa(path: str | Path) -> list[InstructionItem]:
    """WSI-VQA JSON (``Id``, ``Question``, ``Answer``, ``Choice``)."""
    items = []
    for i, r in enumerate(_load_records(path)):
        sid = _first(r, ("Id", "slide_id", "id"), "slide id", path)
        q = _first(r, ("Question", "question"), "question", path)
        a = _first(r, ("Answer", "answer"), "answer", path)
        choices = [str(c) for c in (r.get("Choice") or r.get("choices") or [])]
        if choices:
            letter = _letter_of_answer(a, choices)
            if letter is None:
                raise DataFormatError(f"{path}: item {i}: the answer is not one of the choices")
            items.append(
                InstructionItem(
                    slide_id=sid,
                    question=_with_options(q, choices),
                    answer=f"{letter}) {choices[LETTERS.index(letter)]}.",
                    id=f"{sid}_{i}",
                    question_type="closed",
                    options=choices,
                    answer_letter=letter,
                )
            )
        else:
            items.append(InstructionItem(slide_id=sid, question=q, answer=a, id=f"{sid}_{i}"))
    return items


def read_wsibench_test(path: str | Path) -> list[InstructionItem]:
    """WSI-Bench test JSONL: ``question_id``, ``image``, ``question``, ``T-answer`` (the
    reference), ``metadata`` (the task, e.g. ``Morphology``). Inline options make a closed
    item (answer letter from the reference); otherwise the item is open."""
    items = []
    for rec in _load_records(path):
        qid = str(rec.get("question_id") or rec.get("id") or "")
        sid = str(rec.get("slide_id") or slide_id_from_image(rec.get("image")))
        if not sid:
            raise DataFormatError(f"{path}: record {qid!r} names no slide")
        q = strip_image_tag(_first(rec, ("question", "text", "prompt"), "question", path))
        a = _first(rec, ("T-answer", "answer", "gpt_answer"), "reference answer", path).strip()
        options = list(rec.get("options") or []) or parse_options(q)
        letter = _letter_of_answer(a, options) if options else None
        closed = bool(options) and letter is not None
        items.append(
            InstructionItem(
                slide_id=sid,
                question=q,
                answer=a,
                id=qid or f"{sid}_{len(items)}",
                question_type="closed" if closed else "open",
                task=str(rec.get("metadata") or rec.get("task") or ""),
                options=options if closed else [],
                answer_letter=letter,
            )
        )
    return items


READERS: dict[str, Callable[[str | Path], list[InstructionItem]]] = {
    "wsibench": read_wsibench,
    "wsibench_test": read_wsibench_test,
    "demo": read_wsibench,
    "llava": read_wsibench,
    "slideinstruct": read_slideinstruct,
    "slidebench": read_slidebench,
    "wsivqa": read_wsivqa,
}


def read_instructions(path: str | Path, fmt: str = "auto") -> list[InstructionItem]:
    """Instruction items of ``path`` in format ``fmt`` (``auto``: CSV -> SlideBench, a record with
    ``conversations`` -> WSI-Bench/LLaVA, with ``T-answer``/``question_id`` -> WSI-Bench test
    JSONL, else WSI-VQA)."""
    path = Path(path)
    if fmt == "auto":
        if path.suffix == ".csv":
            fmt = "slidebench"
        else:
            recs = _load_records(path)
            first = recs[0] if recs else {}
            if "conversations" in first:
                fmt = "wsibench"
            elif "T-answer" in first or "question_id" in first:
                fmt = "wsibench_test"
            else:
                fmt = "wsivqa"
    if fmt not in READERS:
        raise DataFormatError(f"unknown instruction format {fmt!r}; use one of {sorted(READERS)}")
    return READERS[fmt](path)


#: Stage-2 prompts that turn a report into a caption item (chosen per slide, deterministically).
CAPTION_PROMPTS: tuple[str, ...] = (
    "Write a concise pathology report for this slide.",
    "Describe the findings of this whole-slide image.",
)


def report_items(reports: Iterable[ReportRecord]) -> list[InstructionItem]:
    """Stage-2 caption items: a report-writing prompt and the report as the answer."""
    out = []
    for i, r in enumerate(reports):
        prompt = CAPTION_PROMPTS[i % len(CAPTION_PROMPTS)]
        out.append(
            InstructionItem(
                slide_id=r.slide_id,
                question=prompt,
                answer=r.report,
                id=f"{r.slide_id}_report",
                task="report",
            )
        )
    return out
