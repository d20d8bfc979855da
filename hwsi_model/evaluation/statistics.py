"""Confidence intervals and paired tests with the slide as the unit.

Items of one slide are not independent (they ask about the same pixels), so every interval
and test here resamples or permutes **slides**, never items.

- Every metric is a function of per-item columns summed over the items of the slides drawn
  (:class:`ItemTable`): accuracy = sum(correct) / n; ROUGE-L, METEOR, BERTScore = sum(value)
  / n (their means); corpus BLEU-1..4 = a function of the summed clipped n-gram counts and
  lengths (:func:`hwsi_model.evaluation.metrics.bleu_from_counts`), so it is resampled as
  corpus BLEU, not as a mean of sentence scores.
- **Interval**: ``scipy.stats.bootstrap`` over slides, percentile method, ``n_resamples``
  draws (default 2,000) from a fixed seed, 95 % by default.
- **Paired difference** (method minus baseline, same items): the same bootstrap, both models
  scored on the same drawn slides.
- **Paired test**: ``scipy.stats.permutation_test`` with ``permutation_type="samples"``: under
  the null the two models' answers on a slide are exchangeable, so each slide's answers are
  swapped between the models (a sign flip per slide); two-sided; exact (all 2^k swaps) when
  that is no more than ``n_permutations``.

With fewer than two slides there is no interval (``None``), nor where a metric is a ratio
whose denominator some drawn slides leave at zero (e.g. fact accuracy when few texts state a
fact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwsi_model.evaluation.metrics import BLEU_COUNT_COLUMNS, bleu_from_counts

CLOSED_METRICS = ("accuracy",)
BLEU_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4")


@dataclass(frozen=True)
class StatsSettings:
    """Bootstrap draws, confidence level, seed, and the permutation test's draws."""

    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0
    n_permutations: int = 9999

    def describe(self) -> dict[str, Any]:
        return {
            "unit": "slide",
            "interval": f"bootstrap over slides (scipy.stats.bootstrap, percentile), "
            f"{self.n_resamples} resamples, seed {self.seed}",
            "level": self.level,
            "paired_test": "permutation test over slides (scipy.stats.permutation_test, "
            f"samples: answers swapped per slide), two-sided, {self.n_permutations} "
            "permutations or exact",
        }


@dataclass(frozen=True)
class ItemTable:
    """One model's per-item scores on a set of items.

    ``slide_ids``: ``[N]``; ``values``: ``[N, C] float64`` with column names ``columns``
    (always including ``n``, 1 per item); ``metrics``: the metric names it yields;
    ``ratios``: metric -> (numerator, denominator) columns, for metrics that are not a column
    over ``n`` (e.g. fact accuracy: correct over stated facts). A ratio over nothing is NaN.
    """

    slide_ids: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray
    metrics: tuple[str, ...] = field(default=())
    ratios: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.slide_ids), len(self.columns)):
            raise ValueError(
                f"values {self.values.shape} do not match {len(self.slide_ids)} items x "
                f"{len(self.columns)} columns"
            )

    def __len__(self) -> int:
        return len(self.slide_ids)

    def subset(self, rows: Sequence[int] | np.ndarray) -> ItemTable:
        rows = np.asarray(rows, dtype=np.int64)
        ids = tuple(self.slide_ids[i] for i in rows)
        return ItemTable(ids, self.columns, self.values[rows], self.metrics, self.ratios)

    def metric(self, name: str, summed: np.ndarray) -> np.ndarray:
        """Metric ``name`` of column sums ``[..., C]`` -> ``[...]``."""
        if name in BLEU_METRICS:
            cols = [self.columns.index(c) for c in BLEU_COUNT_COLUMNS]
            return bleu_from_counts(summed[..., cols])[name]
        num, den = self.ratios.get(name, ("correct" if name == "accuracy" else name, "n"))
        with np.errstate(invalid="ignore", divide="ignore"):
            return summed[..., self.columns.index(num)] / summed[..., self.columns.index(den)]

    def point(self) -> dict[str, float]:
        """Every metric over all items."""
        s = self.values.sum(axis=0)
        return {m: float(self.metric(m, s)) for m in self.metrics}

    def slide_sums(self) -> tuple[list[str], np.ndarray]:
        """Slides (first-seen order) and each slide's column sums ``[k, C]``."""
        slides = list(dict.fromkeys(self.slide_ids))
        pos = {s: i for i, s in enumerate(slides)}
        sums = np.zeros((len(slides), len(self.columns)))
        np.add.at(sums, [pos[s] for s in self.slide_ids], self.values)
        return slides, sums


def closed_table(slide_ids: Sequence[str], correct: Sequence[bool]) -> ItemTable:
    """Closed items: ``correct`` 0/1 per item (an unparsed answer is wrong)."""
    v = np.column_stack([np.asarray(correct, dtype=np.float64), np.ones(len(correct))])
    return ItemTable(tuple(slide_ids), ("correct", "n"), v.reshape(-1, 2), CLOSED_METRICS)


def open_table(
    slide_ids: Sequence[str], means: Mapping[str, np.ndarray], bleu_counts: np.ndarray
) -> ItemTable:
    """Open items: per-item values of the mean metrics and the BLEU counts ``[N, 10]``
    (:func:`hwsi_model.evaluation.metrics.open_text_item_values`)."""
    names = list(means)
    n = len(slide_ids)
    cols = [np.asarray(means[k], dtype=np.float64).reshape(n) for k in names]
    v = np.column_stack([*cols, np.asarray(bleu_counts, dtype=np.float64).reshape(n, -1),
                         np.ones(n)])  # fmt: skip
    columns = (*names, *BLEU_COUNT_COLUMNS, "n")
    return ItemTable(tuple(slide_ids), columns, v, (*BLEU_METRICS, *names))


def _same_items(a: ItemTable, b: ItemTable) -> None:
    if a.slide_ids != b.slide_ids or a.columns != b.columns:
        raise ValueError("a paired comparison needs both models scored on the same items")


def bootstrap_interval(
    table: ItemTable, metric: str, settings: StatsSettings | None = None
) -> tuple[float, float] | None:
    """Percentile interval of ``metric`` by resampling slides (``None``: < 2 slides)."""
    from scipy.stats import bootstrap

    st = settings or StatsSettings()
    _, sums = table.slide_sums()
    if len(sums) < 2:
        return None

    def stat(i: np.ndarray, axis: int = -1) -> np.ndarray:
        return table.metric(metric, sums[np.asarray(i, dtype=np.int64)].sum(axis=-2))

    res = bootstrap(
        (np.arange(len(sums)),), stat, vectorized=True, n_resamples=st.n_resamples,
        confidence_level=st.level, method="percentile", rng=np.random.default_rng(st.seed),
    )  # fmt: skip
    ci = res.confidence_interval
    if not (np.isfinite(ci.low) and np.isfinite(ci.high)):
        return None  # some draws had nothing to measure (a ratio over no stated fact)
    return float(ci.low), float(ci.high)


def paired_comparison(
    a: ItemTable, b: ItemTable, metric: str, settings: StatsSettings | None = None
) -> dict[str, Any]:
    """``a`` minus ``b`` on ``metric`` over the same items: ``{"difference", "interval"
    (bootstrap over slides, ``None`` with < 2 slides), "p_value" (paired permutation test
    over slides), "n_slides"}``."""
    from scipy.stats import bootstrap, permutation_test

    st = settings or StatsSettings()
    _same_items(a, b)
    _, sa = a.slide_sums()
    _, sb = b.slide_sums()
    k = len(sa)
    diff = float(a.metric(metric, sa.sum(axis=0)) - b.metric(metric, sb.sum(axis=0)))
    out: dict[str, Any] = {"difference": diff, "interval": None, "p_value": None, "n_slides": k}
    if k < 2:
        return out

    def boot_stat(i: np.ndarray, axis: int = -1) -> np.ndarray:
        i = np.asarray(i, dtype=np.int64)
        return a.metric(metric, sa[i].sum(axis=-2)) - b.metric(metric, sb[i].sum(axis=-2))

    res = bootstrap(
        (np.arange(k),), boot_stat, vectorized=True, n_resamples=st.n_resamples,
        confidence_level=st.level, method="percentile", rng=np.random.default_rng(st.seed),
    )  # fmt: skip
    lo, hi = res.confidence_interval.low, res.confidence_interval.high
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(diff)):
        return out  # a ratio over nothing in some draws: no interval, no test
    out["interval"] = [float(lo), float(hi)]
    both = np.concatenate([sa, sb])  # row j < k: a on slide j; row k + j: b on slide j

    def perm_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
        return a.metric(metric, both[x].sum(axis=-2)) - a.metric(metric, both[y].sum(axis=-2))

    test = permutation_test(
        (np.arange(k), np.arange(k) + k), perm_stat, permutation_type="samples",
        vectorized=True, n_resamples=st.n_permutations, alternative="two-sided",
        rng=np.random.default_rng(st.seed),
    )  # fmt: skip
    out["p_value"] = float(test.pvalue)
    return out


def compare_models(
    tables: Mapping[str, ItemTable], method: str, settings: StatsSettings | None = None
) -> dict[str, Any]:
    """Intervals of every model's metrics and the method's paired comparison with each other
    model: ``{"n_slides", "intervals": {model: {metric: [lo, hi] | None}}, "paired":
    {baseline: {metric: paired_comparison(...)}}}``."""
    st = settings or StatsSettings()
    ref = tables[method]
    out: dict[str, Any] = {
        "n_slides": len(set(ref.slide_ids)),
        "intervals": {},
        "paired": {},
    }
    for name, t in tables.items():
        ivals = {m: bootstrap_interval(t, m, st) for m in t.metrics}
        out["intervals"][name] = {m: list(v) if v else None for m, v in ivals.items()}
        if name != method:
            out["paired"][name] = {m: paired_comparison(ref, t, m, st) for m in ref.metrics}
    return out
