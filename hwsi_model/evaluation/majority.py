"""The majority-answer baseline: per question, the answer most often correct in the training
split, given without looking at the slide.

It is the floor a model must beat: on a family where one answer dominates (a constant "No"
scores 0.667 on a 2:1 true/false family) chance is not the floor.

Questions are matched by their *stem*: the question text without its option texts and letters,
lower-cased, punctuation dropped; a test question whose stem no training item has falls back to
the training items of the same family and task, then of the same family.

- Multiple choice: the option text most often correct under that stem, answered with its
  letter in the test item's own options; when the test item does not offer that text, the most
  often correct letter.
- True/false: yes or no, whichever was more often correct.
- Classification: the most frequent label.
- Open items (questions, captions, reports): the most frequent training reference under the
  stem (when all differ, the first one read): the "template answer", which scores highly on
  n-gram metrics without any slide information.

Ties go to the answer seen first, so the baseline is deterministic for a given training file.
Only the training split's items are read (:func:`fit_majority` is given them), never a
validation or test item.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwsi_model.evaluation.families import (
    CLASSIFICATION,
    MULTIPLE_CHOICE,
    TRUE_FALSE,
    EvalItem,
)
from hwsi_model.evaluation.parsing import LETTERS, normalize_label

_WORD = re.compile(r"[a-z0-9]+")


def question_stem(item: EvalItem) -> str:
    """The question without its options: lower-case words, single letters dropped."""
    q = item.item.question.lower()
    for opt in sorted(item.item.options, key=len, reverse=True):
        q = q.replace(opt.lower(), " ")
    return " ".join(w for w in _WORD.findall(q) if len(w) > 1 and w != "image")


def _keys(item: EvalItem) -> list[tuple[str, ...]]:
    """From the most to the least specific."""
    return [
        (item.family, "stem", question_stem(item)),
        (item.family, "task", item.item.task.lower()),
        (item.family,),
    ]


@dataclass
class MajorityAnswers:
    """Per key (:func:`_keys`) counters of what was correct in training."""

    answers: dict[tuple[str, ...], Counter] = field(default_factory=dict)
    letters: dict[tuple[str, ...], Counter] = field(default_factory=dict)
    n_train: int = 0

    def _add(self, item: EvalItem) -> None:
        it = item.item
        if item.family == MULTIPLE_CHOICE:
            letter = str(it.answer_letter)
            value = normalize_label(it.options[LETTERS.index(letter)])
        elif item.family == TRUE_FALSE:
            value = "yes" if item.target else "no"
            letter = None
        else:  # classification label or open reference text
            value, letter = it.answer, None
        for key in _keys(item):
            self.answers.setdefault(key, Counter())[value] += 1
            if letter is not None:
                self.letters.setdefault(key, Counter())[letter] += 1
        self.n_train += 1

    def answer(self, item: EvalItem) -> str:
        """The baseline's answer text to ``item`` (``""`` when training had no item of its
        family: scored as unparsed)."""
        for key in _keys(item):
            counts = self.answers.get(key)
            if not counts:
                continue
            if item.family == MULTIPLE_CHOICE:
                opts = [normalize_label(o) for o in item.item.options]
                for value, _ in counts.most_common():
                    if value in opts:
                        i = opts.index(value)
                        return f"{LETTERS[i]}) {item.item.options[i]}"
                letters = self.letters.get(key, Counter())
                offered = [x for x, _ in letters.most_common() if x in LETTERS[: len(opts)]]
                if offered:
                    return offered[0]
                continue
            value = counts.most_common(1)[0][0]
            if item.family == TRUE_FALSE:
                return "Yes" if value == "yes" else "No"
            if item.family == CLASSIFICATION and value not in item.labels:
                continue
            return value
        return ""

    @property
    def families(self) -> set[str]:
        """The families training held items of: the baseline exists only for those."""
        return {key[0] for key in self.answers}

    def answer_all(self, items: Sequence[EvalItem]) -> list[str]:
        return [self.answer(e) for e in items]


def fit_majority(train_items: Iterable[EvalItem]) -> MajorityAnswers:
    """Count the training split's correct answers (Counter order = first seen, so ties go to
    the earlier item)."""
    m = MajorityAnswers()
    for e in train_items:
        m._add(e)
    if not m.n_train:
        raise ValueError("the majority baseline needs at least one training item")
    return m


def majority_from_files(
    files: Sequence[str | Path], manifest: str | Path, split: str = "train", fmt: str = "auto"
) -> MajorityAnswers:
    """:func:`fit_majority` on the items of ``files`` whose slide is in ``split`` of the
    manifest (the training instruction files also hold validation items; those are dropped)."""
    from hwsi_model.data.manifest import read_manifest
    from hwsi_model.evaluation.families import read_test_set

    slides = {r.slide_id for r in read_manifest(manifest, splits=[split])}
    items = [e for f in files for e in read_test_set(f, fmt) if e.item.slide_id in slides]
    if not items:
        raise ValueError(f"no item of {[str(f) for f in files]} has a slide in split {split!r}")
    return fit_majority(items)
