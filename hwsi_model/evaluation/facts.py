"""Fact-level scores of generated open answers and reports.

BLEU, ROUGE-L and METEOR reward the template: "About 2% of the tissue area is carcinoma" scores
nearly as well as the reference's "About 62% ..." does. Here each generated text is parsed for
the facts a pathology report states, and each fact stated is checked against the slide's
ground truth:

======================  =======  ===========  ================================================
fact                    scale    kind         ground truth (a slide's ``facts``, ``label``)
======================  =======  ===========  ================================================
``diagnosis``           slide    category     ``label`` (benign, low_grade, high_grade)
``tissue_pieces``       slide    number       ``n_tissue_pieces``
``lesion_extent_pct``   region   number       ``lesion_fraction_pct`` (% of the tissue area)
``lesion_location``     region   category     ``lesion_location`` (a quadrant, a half, diffuse)
``inflammation_focus``  region   category     ``inflammation_focus`` (present, absent)
``focus_location``      region   category     ``focus_location`` (upper, lower: towards the top
                                              or bottom of the tissue)
``architecture``        patch    category     ``architecture`` (glands, sheets)
``lesion_density``      patch    category     ``lesion_nuclei_per_0.01mm2`` in words
``lesion_density_n``    patch    number       ``lesion_nuclei_per_0.01mm2``
``nucleus_size``        cell     category     ``lesion_nucleus_diameter_um_mean`` in words
``nucleus_diameter_um`` cell     number       ``lesion_nucleus_diameter_um_mean``
``chromatin``           cell     category     ``chromatin`` (fine, slightly coarse, coarse)
======================  =======  ===========  ================================================

The ground truth is what the demo generator measures (:mod:`hwsi_model.demo.reports`); a real
cohort gives the same keys in its ``reports.jsonl`` records (``facts``), any subset of them.

Per item (one generated text of one slide):

- a category fact is *stated* when the text names one of its values; it is *correct* when every
  value named is the true one (a text that names two values of one fact contradicts itself
  and is wrong);
- a number is read from the first phrase that states it; its absolute error is recorded;
  ``tissue_pieces`` is also *correct* when equal;
- the item *contradicts* the slide when at least one category fact it states is wrong.

Metrics (:func:`fact_table`, ratios of sums over the items, so they resample by slide like the
others): ``fact_accuracy`` (correct / stated, category facts), ``fact_recall`` (correct /
expected: the category facts the item's reference states, so a question about the nuclei is
not asked for the location), ``contradiction_rate`` (items that contradict the slide / items),
per fact ``{fact}_accuracy`` (categories, counts) or ``{fact}_mae`` (numbers, in the fact's
unit), per scale ``{scale}_accuracy``. A ratio over nothing (no text states the fact) is
``None``.

Parsing is by patterns, written for the demo's wording and its usual variants; a fact phrased
otherwise is *not stated*, never guessed, so recall is a lower bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwsi_model.evaluation.families import OPEN_FAMILIES, EvalItem, by_family
from hwsi_model.evaluation.statistics import ItemTable, StatsSettings, compare_models

SCALES = ("slide", "region", "patch", "cell")
# Thresholds of the ground truth's words (as the demo's reports word them).
DENSE_PER_0_01MM2 = 22.0
MODERATE_PER_0_01MM2 = 14.0
SMALL_NUCLEUS_UM, LARGE_NUCLEUS_UM = 7.5, 10.5

_NUM = r"(\d+(?:\.\d+)?)"
_COUNT_WORDS = {"a single": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@dataclass(frozen=True)
class FactSpec:
    """One fact: its scale, kind, how to read it from text and from the ground truth.

    ``patterns``: for a category, ``(regex, value)`` pairs (every match counts); for a number,
    regexes whose first group is the number (the first match anywhere counts).
    ``truth``: ground truth ``(facts, label) -> value`` or ``None`` when the slide lacks it.
    ``exact``: a number that is also right or wrong (a count), not only near or far.
    """

    name: str
    scale: str
    kind: str  # "category" | "number"
    patterns: tuple[tuple[str, str], ...] | tuple[str, ...]
    truth: Callable[[Mapping[str, Any], str | None], Any]
    exact: bool = False


def _key(key: str, fn: Callable[[Any], Any] = lambda v: v) -> Callable:
    def get(facts: Mapping[str, Any], label: str | None) -> Any:
        v = facts.get(key)
        return None if v is None else fn(v)

    return get


def _density_word(v: float) -> str:
    return (
        "dense" if v >= DENSE_PER_0_01MM2 else "moderate" if v >= MODERATE_PER_0_01MM2 else "sparse"
    )


def _size_word(v: float) -> str:
    return "small" if v < SMALL_NUCLEUS_UM else "medium" if v < LARGE_NUCLEUS_UM else "large"


def _count(text: str) -> float:
    return float(_COUNT_WORDS.get(text, text))


FACTS: tuple[FactSpec, ...] = (
    FactSpec(
        "diagnosis", "slide", "category",
        ((r"\bbenign\b", "benign"), (r"\blow[- ]grade\b", "low_grade"),
         (r"\bhigh[- ]grade\b", "high_grade")),
        lambda facts, label: label,
    ),
    FactSpec(
        "tissue_pieces", "slide", "number",
        (r"\b(a single|one|two|three|four|five|six|\d+) (?:separate |distinct )?(?:tissue )?"
         r"(?:pieces?|fragments?)\b",),
        _key("n_tissue_pieces"), exact=True,
    ),
    FactSpec(
        "lesion_extent_pct", "region", "number",
        (rf"{_NUM}\s*% of the tissue(?! fraction)\b",
         rf"(?:occupies|involves|covers) (?:about |approximately |roughly )?{_NUM}\s*%"),
        _key("lesion_fraction_pct"),
    ),
    FactSpec(
        "lesion_location", "region", "category",
        ((r"\bupper left\b", "upper left"), (r"\bupper right\b", "upper right"),
         (r"\blower left\b", "lower left"), (r"\blower right\b", "lower right"),
         (r"\bupper half\b", "upper"), (r"\blower half\b", "lower"),
         (r"\bleft half\b", "left"), (r"\bright half\b", "right"),
         (r"without a predominant side|\bdiffuse(?:ly)?\b", "diffuse")),
        _key("lesion_location"),
    ),
    FactSpec(
        "inflammation_focus", "region", "category",
        ((r"\bno (?:inflammatory focus|focus of (?:[a-z]+ )*?inflammation)\b", "absent"),
         (r"\b(?:a|an) (?:focus of (?:[a-z]+ )*?inflammation|inflammatory focus)\b", "present")),
        _key("inflammation_focus", lambda v: "present" if v else "absent"),
    ),
    FactSpec(
        "focus_location", "region", "category",
        ((r"\btowards the top\b", "upper"), (r"\btowards the bottom\b", "lower")),
        _key("focus_location"),
    ),
    FactSpec(
        "architecture", "patch", "category",
        ((r"\bsolid sheets?\b|\bgrow(?:s|ing)? in sheets\b", "sheets"),
         (r"\bglands (?:are|is)\b|\bopen lumens\b|\bglandular architecture\b", "glands")),
        _key("architecture"),
    ),
    FactSpec(
        "lesion_density", "patch", "category",
        ((r"lesional nuclei are densely packed|\(densely packed\)", "dense"),
         (r"lesional nuclei are moderately crowded|\(moderately crowded\)", "moderate"),
         (r"lesional nuclei are sparse|\(sparse\)", "sparse")),
        _key("lesion_nuclei_per_0.01mm2", _density_word),
    ),
    FactSpec(
        "lesion_density_n", "patch", "number",
        (rf"about {_NUM} lesional nuclei per 0\.01 ?mm2",
         rf"lesional nuclei are [a-z -]+, about {_NUM} per 0\.01 ?mm2"),
        _key("lesion_nuclei_per_0.01mm2"),
    ),
    FactSpec(
        "nucleus_size", "cell", "category",
        ((r"lesional nuclei are small\b|\bsmall (?:[a-z]+ )?nuclei\b", "small"),
         (r"lesional nuclei are medium(?:-sized)?\b|\bmedium(?:-sized)? (?:[a-z]+ )?nuclei\b",
          "medium"),
         (r"lesional nuclei are large\b|\blarge (?:[a-z]+ )?nuclei\b", "large")),
        _key("lesion_nucleus_diameter_um_mean", _size_word),
    ),
    FactSpec(
        "nucleus_diameter_um", "cell", "number",
        (rf"mean (?:nuclear )?diameter (?:of|is) (?:about )?{_NUM} ?um",),
        _key("lesion_nucleus_diameter_um_mean"),
    ),
    FactSpec(
        "chromatin", "cell", "category",
        ((r"chromatin is fine\b|\bfine chromatin\b", "fine"),
         (r"chromatin is slightly coarse\b|\bslightly coarse chromatin\b", "slightly coarse"),
         (r"chromatin is coarse\b|(?<!slightly )\bcoarse chromatin\b", "coarse")),
        _key("chromatin"),
    ),
)  # fmt: skip
FACT_NAMES = tuple(f.name for f in FACTS)


def parse_facts(text: str, specs: Sequence[FactSpec] = FACTS) -> dict[str, list]:
    """Every fact ``text`` states: ``{fact: [values]}`` (categories: each distinct value named,
    in order; numbers: the first one read). Facts not stated are absent."""
    low = " ".join(text.lower().split())
    out: dict[str, list] = {}
    for spec in specs:
        if spec.kind == "category":
            hits = sorted(
                (m.start(), value)
                for pattern, value in spec.patterns
                for m in re.finditer(pattern, low)
            )
            values = list(dict.fromkeys(v for _, v in hits))
        else:
            found = [m for p in spec.patterns if (m := re.search(p, low))]
            first = min(found, key=lambda m: m.start()) if found else None
            values = [_count(first.group(1))] if first else []
        if values:
            out[spec.name] = values
    return out


def slide_truth(
    facts: Mapping[str, Any], label: str | None, specs: Sequence[FactSpec] = FACTS
) -> dict[str, Any]:
    """The ground-truth value of every fact the slide has (others absent)."""
    out = {}
    for spec in specs:
        v = spec.truth(facts, label)
        if v is not None:
            out[spec.name] = float(v) if spec.kind == "number" else str(v)
    return out


@dataclass(frozen=True)
class FactScore:
    """One text against one slide, per fact the slide has: ``stated`` and ``correct``
    (category, or an exact number), ``abs_error`` (numbers stated), ``expected`` (the reference
    states it: what the question asked for)."""

    stated: dict[str, bool]
    correct: dict[str, bool]
    abs_error: dict[str, float]
    expected: dict[str, bool]
    contradicts: bool


def score_text(
    text: str,
    truth: Mapping[str, Any],
    reference: str | None = None,
    specs: Sequence[FactSpec] = FACTS,
) -> FactScore:
    """Check each fact ``text`` states against ``truth`` (:func:`slide_truth`). With a
    ``reference`` the facts it states are the expected ones (a question about the nuclei does
    not ask for the location); without, every fact the slide has is."""
    said = parse_facts(text, specs)
    asked = parse_facts(reference, specs) if reference is not None else None
    stated, correct, err, expected = {}, {}, {}, {}
    for spec in specs:
        if spec.name not in truth:
            continue
        values = said.get(spec.name)
        stated[spec.name] = bool(values)
        expected[spec.name] = asked is None or spec.name in asked
        correct[spec.name] = False
        if not values:
            continue
        t = truth[spec.name]
        if spec.kind == "category":
            correct[spec.name] = values == [t]
        else:
            err[spec.name] = abs(values[0] - t)
            correct[spec.name] = spec.exact and values[0] == t
    contradicts = any(
        stated[s.name] and not correct[s.name] for s in specs
        if s.kind == "category" and s.name in stated
    )  # fmt: skip
    return FactScore(stated, correct, err, expected, contradicts)


def fact_table(
    slide_ids: Sequence[str], scores: Sequence[FactScore], specs: Sequence[FactSpec] = FACTS
) -> ItemTable:
    """Per-item columns of :func:`score_text` results, with the module's metrics as ratios of
    column sums (so :mod:`~hwsi_model.evaluation.statistics` bootstraps them over slides)."""
    n = len(scores)
    cols: dict[str, np.ndarray] = {}

    def column(values: Sequence[float]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(n)

    cat = [s for s in specs if s.kind == "category"]
    num = [s for s in specs if s.kind == "number"]
    for s in specs:
        cols[f"{s.name}_stated"] = column([x.stated.get(s.name, False) for x in scores])
        cols[f"{s.name}_correct"] = column([x.correct.get(s.name, False) for x in scores])
        cols[f"{s.name}_expected"] = column([x.expected.get(s.name, False) for x in scores])
        cols[f"{s.name}_recalled"] = cols[f"{s.name}_expected"] * cols[f"{s.name}_correct"]
    for s in num:
        cols[f"{s.name}_abs_error"] = column([x.abs_error.get(s.name, 0.0) for x in scores])

    def total(of: Sequence[FactSpec], what: str) -> np.ndarray:
        return column(np.sum([cols[f"{s.name}_{what}"] for s in of], axis=0))

    for what in ("stated", "correct", "expected", "recalled"):
        cols[f"category_{what}"] = total(cat, what)
    for scale in SCALES:
        of = [s for s in cat if s.scale == scale]
        if of:
            cols[f"{scale}_stated"] = total(of, "stated")
            cols[f"{scale}_correct"] = total(of, "correct")
    cols["contradicts"] = column([x.contradicts for x in scores])
    cols["n"] = np.ones(n)
    ratios: dict[str, tuple[str, str]] = {
        "fact_accuracy": ("category_correct", "category_stated"),
        "fact_recall": ("category_recalled", "category_expected"),
        "contradiction_rate": ("contradicts", "n"),
    }
    for scale in SCALES:
        if f"{scale}_stated" in cols:
            ratios[f"{scale}_accuracy"] = (f"{scale}_correct", f"{scale}_stated")
    for s in cat:
        ratios[f"{s.name}_accuracy"] = (f"{s.name}_correct", f"{s.name}_stated")
    for s in num:
        ratios[f"{s.name}_mae"] = (f"{s.name}_abs_error", f"{s.name}_stated")
        if s.exact:
            ratios[f"{s.name}_accuracy"] = (f"{s.name}_correct", f"{s.name}_stated")
    names = tuple(cols)
    values = np.column_stack([cols[c] for c in names]) if n else np.zeros((0, len(names)))
    return ItemTable(tuple(slide_ids), names, values, tuple(ratios), ratios)


def fact_results(
    items: Sequence[EvalItem],
    answers: Mapping[str, Sequence[str]],
    truths: Mapping[str, Mapping[str, Any]],
    method: str,
    stats: StatsSettings | None = None,
    families: Mapping[str, Collection[str]] | None = None,
) -> dict[str, dict]:
    """Fact scores of every model's open answers, per open family, on the items whose slide
    has ground truth (``truths``: slide id -> :func:`slide_truth`): ``{family: {"n", "n_slides",
    "models": {model: {"metrics", "intervals"}}, "paired": {baseline: {metric: ...}}}}``;
    metrics that measure nothing (no fact stated) are ``None``. ``families``: model -> the
    families it answers (a baseline without a figure for a family is left out there)."""
    out: dict[str, dict] = {}
    for fam, idx in by_family(items).items():
        if fam not in OPEN_FAMILIES:
            continue
        rows = [i for i in idx if items[i].item.slide_id in truths]
        if not rows:
            continue
        slides = [items[i].item.slide_id for i in rows]
        tables = {}
        for name, texts in answers.items():
            if families is not None and fam not in families.get(name, ()):
                continue
            scores = [
                score_text(texts[i], truths[items[i].item.slide_id], items[i].item.answer)
                for i in rows
            ]
            tables[name] = fact_table(slides, scores)
        cmp = compare_models(tables, method, stats)
        out[fam] = {
            "n": len(rows),
            "n_slides": cmp["n_slides"],
            "models": {
                name: {"metrics": _finite(t.point()), "intervals": cmp["intervals"][name]}
                for name, t in tables.items()
            },
            "paired": {
                b: {m: c for m, c in per.items() if np.isfinite(c["difference"])}
                for b, per in cmp["paired"].items()
            },
        }
    return out


def _finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}
