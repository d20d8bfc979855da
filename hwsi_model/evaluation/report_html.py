"""Machine-readable results and plain HTML reports of an evaluation run.

A *model result* is ``{"name": str, "families": {family: {"metrics": {name: value}, "n": int,
"unparsed": int, "chance": float | None[, "per_task", "confusion"]}}}``; the families part
is what :func:`hwsi_model.evaluation.families.score_items` returns. The first model of a list
is the one evaluated; the others (e.g. ``flat``, ``text_only``) are its baselines.

- :func:`write_metrics_json`: ``metrics.json``::

      {"schema": "hwsi.eval_metrics", "schema_version": 1, "model": "hierarchical",
       "families": {"multiple_choice": {"metrics": {"accuracy": 0.62}, "n": 24, "unparsed": 1,
                                        "chance": 0.417,
                                        "intervals": {"accuracy": [0.45, 0.78]},
                                        "n_slides": 6,
                                        "baselines": {"flat": {"metrics": {...}, "unparsed": 0,
                                                               "intervals": {...}},
                                                      "majority": {...}},
                                        "paired": {"flat": {"accuracy": {"difference": 0.08,
                                                   "interval": [-0.1, 0.25], "p_value": 0.41,
                                                   "n_slides": 6}}, ...},
                                        "per_task": {...}, "confusion": {...}},
                    "open_question": {..., "chance": null, "baselines": {...}}},
       ...extra}

  ``intervals``, ``paired`` and ``n_slides`` are there when the run computed them
  (:func:`hwsi_model.evaluation.pipeline.add_statistics`); an interval is ``null`` with fewer
  than two test slides.

- :func:`render_slide_page`: one page per slide: each question with the answer, the reference,
  whether it was right (closed items), and its pictures; slide-level pictures on top.
- :func:`render_cohort_report`: metrics per family with ``n``, the chance level and every
  model side by side (unparsed counts beside closed accuracies, the best value in bold), extra
  tables (retrieval, zero-shot), the confusion matrices of the evaluated model, a few examples,
  training curves and links to the slide pages.

Pages are self-contained HTML (inline CSS, no scripts); pictures and pages are linked by paths
relative to the page, so a run folder can be moved or served as it is.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import DictLoader, Environment, select_autoescape

from hwsi_model.atomic import atomic_output

log = logging.getLogger(__name__)

METRICS_SCHEMA = "hwsi.eval_metrics"
METRICS_SCHEMA_VERSION = 1

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
.ok { color: #176f2c; } .bad { color: #b00020; } .muted { color: #777; font-size: 0.85em; }
.item { border-top: 1px solid #ccc; padding: 0.6em 0; }
img { max-width: 100%; border: 1px solid #ccc; margin: 0.3em 0; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.4em; margin: 0.2em 0; }
"""

_BASE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ css }}</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_SLIDE = """{% extends "base.html" %}{% block body %}
<h1>{{ title }}</h1>
{% if back %}<p><a href="{{ back }}">cohort report</a></p>{% endif %}
{% for name, src in images %}<figure><img src="{{ src }}" alt="{{ name }}">
<figcaption class="muted">{{ name }}</figcaption></figure>{% endfor %}
{% for it in items %}<div class="item" id="{{ it.id }}">
<h3>{{ it.id }} <span class="muted">{{ it.family }}
{% if it.task %} / {{ it.task }}{% endif %}</span>
{% if it.correct is sameas true %}<span class="ok">correct</span>
{% elif it.correct is sameas false %}<span class="bad">wrong{% if it.parsed is none %}
(unparsed){% endif %}</span>{% endif %}</h3>
<div class="l"><b>Question</b><pre>{{ it.question }}</pre><b>Answer</b><pre>{{ it.answer }}</pre>
<b>Reference</b><pre>{{ it.reference }}</pre></div>
{% for name, src in it.images %}<figure><img src="{{ src }}" alt="{{ name }}">
<figcaption class="muted">{{ name }}</figcaption></figure>{% endfor %}
</div>{% endfor %}
{% endblock %}
"""

_COHORT = """{% extends "base.html" %}{% block body %}
<h1>{{ title }}</h1>
{% if metrics_json %}<p>Machine-readable: <a href="{{ metrics_json }}">metrics.json</a></p>
{% endif %}
{% if excluded %}<p class="bad">{{ excluded|length }} slide(s) of the cohort were excluded: a
per-slide job failed on them (failures.tsv), so they were neither trained on nor evaluated.
{% if left_out and left_out["items"] %}{{ left_out["items"] }} test item(s) of slides outside the
split were left out.{% endif %}</p>
<table><tr><th class="l">slide</th><th class="l">job</th><th class="l">step</th>
<th class="l">reason</th></tr>{% for f in excluded %}<tr><td class="l">{{ f.slide_id }}</td>
<td class="l">{{ f.job }}</td><td class="l">{{ f.step }}</td><td class="l">{{ f.reason }}</td>
</tr>{% endfor %}</table>
{% elif left_out and left_out["items"] %}<p class="muted">{{ left_out["items"] }} test item(s) of
slides outside the split were left out.</p>{% endif %}
<h2>Metrics per task family</h2>
<p class="muted">Brackets: 95% intervals by bootstrap over slides (the items of one slide are
not independent). With few test slides they are wide: read them before the point values.</p>
<table><tr><th class="l">family</th><th class="l">metric</th><th>n</th><th>chance</th>
{% for m in models %}<th>{{ m }}</th>{% endfor %}</tr>
{% for row in rows %}<tr><td class="l">{{ row.family }}</td><td class="l">{{ row.metric }}</td>
<td>{{ row.n }}</td><td>{{ row.chance }}</td>
{% for cell in row.cells %}<td>
{% if cell.best %}<b>{{ cell.value }}</b>{% else %}{{ cell.value }}{% endif %}
{% if cell.interval %}<span class="muted"> {{ cell.interval }}</span>{% endif %}
{% if cell.unparsed is not none %}<span class="muted"> ({{ cell.unparsed }} unparsed)</span>
{% endif %}</td>
{% endfor %}</tr>{% endfor %}</table>
{% for t in tables %}<h2>{{ t.title }}</h2><table><tr><th class="l"></th>
{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, values in t.rows %}<tr><td class="l">{{ name }}</td>
{% for v in values %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}
{% for c in confusions %}<h2>Confusion matrix: {{ c.family }} ({{ model }})</h2>
<table><tr><th class="l">target \\ answer</th>
{% for col in c.columns %}<th>{{ col }}</th>{% endfor %}</tr>
{% for label, row in c.rows %}<tr><th class="l">{{ label }}</th>
{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}
{% if examples %}<h2>Examples</h2>{% for ex in examples %}<div class="item">
<b>{{ ex.slide_id }}</b> <span class="muted">{{ ex.family }}</span>
{% if ex.page %}<a href="{{ ex.page }}">slide page</a>{% endif %}
{% if ex.correct is sameas true %}<span class="ok">correct</span>
{% elif ex.correct is sameas false %}<span class="bad">wrong</span>{% endif %}
<pre>Q: {{ ex.question }}</pre><pre>A: {{ ex.answer }}</pre><pre>Reference: {{ ex.reference }}</pre>
</div>{% endfor %}{% endif %}
{% if curves %}<h2>Training curves</h2>{% for name, src in curves %}<figure>
<img src="{{ src }}" alt="{{ name }}"><figcaption class="muted">{{ name }}</figcaption></figure>
{% endfor %}{% endif %}
{% if slide_pages %}<h2>Slides</h2><ul>{% for name, src in slide_pages %}
<li><a href="{{ src }}">{{ name }}</a></li>{% endfor %}</ul>{% endif %}
{% endblock %}
"""

_ENV = Environment(
    loader=DictLoader({"base.html": _BASE, "slide.html": _SLIDE, "cohort.html": _COHORT}),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def relative_link(target: str | Path, page: str | Path) -> str:
    """URL of ``target`` relative to the folder of the HTML file ``page`` (posix, quoted)."""
    rel = os.path.relpath(Path(target).absolute(), Path(page).absolute().parent)
    return quote(Path(rel).as_posix())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def _links(images: Mapping[str, str | Path] | None, page: Path) -> list[tuple[str, str]]:
    return [(name, relative_link(p, page)) for name, p in (images or {}).items()]


# -- metrics.json -----------------------------------------------------------------------------


def _check_family(model: str, family: str, r: Mapping[str, Any]) -> None:
    if not isinstance(r.get("metrics"), Mapping):
        raise ValueError(f"{model}/{family}: 'metrics' must be a mapping of metric values")
    for key in ("n", "unparsed"):
        if not isinstance(r.get(key), int) or r[key] < 0:
            raise ValueError(f"{model}/{family}: '{key}' must be a non-negative integer")


def metrics_document(
    results: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``metrics.json`` content for ``results`` (first = evaluated model, others =
    baselines); see the module doc. Raises ``ValueError`` for a malformed result."""
    if not results:
        raise ValueError("no model results")
    primary, baselines = results[0], results[1:]
    families: dict[str, Any] = {}
    for fam, r in primary["families"].items():
        _check_family(primary["name"], fam, r)
        entry = {
            "metrics": dict(r["metrics"]),
            "n": r["n"],
            "unparsed": r["unparsed"],
            "chance": r.get("chance"),
            "baselines": {},
        }
        for b in baselines:
            br = b["families"].get(fam)
            if br is None:
                continue
            _check_family(b["name"], fam, br)
            if br["n"] != r["n"]:
                log.warning("%s/%s: %d items vs %d", b["name"], fam, br["n"], r["n"])
            entry["baselines"][b["name"]] = {
                "metrics": dict(br["metrics"]),
                "unparsed": br["unparsed"],
                "n": br["n"],
            }
            if "intervals" in br:
                entry["baselines"][b["name"]]["intervals"] = br["intervals"]
        if entry["chance"] is None and not entry["baselines"]:
            log.warning("%s: neither a chance level nor a baseline to read it against", fam)
        for key in ("intervals", "n_slides", "paired", "per_task", "confusion"):
            if key in r:
                entry[key] = r[key]
        families[fam] = entry
    return {
        "schema": METRICS_SCHEMA,
        "schema_version": METRICS_SCHEMA_VERSION,
        "model": primary["name"],
        "families": families,
        **(extra or {}),
    }


def write_metrics_json(
    path: str | Path,
    results: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.json`` (atomically): per family the metric values, item count,
    unparsed count, chance level and the baselines' values (module doc).

    Args:
        path: output file.
        results: model results, the evaluated model first; a single result is accepted.
        extra: more top-level entries (e.g. ``{"retrieval": {...}, "split": "test"}``).
    """
    if isinstance(results, Mapping):
        results = [results]
    doc = metrics_document(results, extra)
    return _write(path, json.dumps(doc, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def training_curves(training_dir: str | Path) -> dict[str, Path]:
    """``{"stage 1": .../stage1/loss.png, ...}``: the loss plots that training writes in each
    stage folder (``stage*/loss.png``), in stage order; missing ones are left out."""
    found = sorted(Path(training_dir).glob("stage*/loss.png"), key=lambda p: p.parent.name)
    return {p.parent.name.replace("stage", "stage "): p for p in found}


# -- pages ------------------------------------------------------------------------------------


def render_slide_page(
    out_html: str | Path,
    slide_id: str,
    items: Sequence[Mapping[str, Any]],
    images: Mapping[str, str | Path] | None = None,
    item_images: Mapping[str, Mapping[str, str | Path]] | None = None,
    cohort_report: str | Path | None = None,
) -> Path:
    """One slide's page.

    Args:
        out_html: the page to write.
        items: prediction records (:meth:`EvalItem.record`: ``id``, ``family``, ``task``,
            ``question``, ``answer``, ``reference``, ``parsed``, ``correct``).
        images: slide-level pictures by caption (e.g. the thumbnail, report heatmaps).
        item_images: pictures of each item, by item ``id`` then caption.
        cohort_report: the cohort page, linked back.
    """
    page = Path(out_html)
    rows = []
    for it in items:
        row = dict(it)
        row["images"] = _links((item_images or {}).get(str(it.get("id")), {}), page)
        rows.append(row)
    html = _ENV.get_template("slide.html").render(
        title=f"Slide {slide_id}",
        css=_CSS,
        images=_links(images, page),
        items=rows,
        back=relative_link(cohort_report, page) if cohort_report else None,
    )
    return _write(page, html)


def _interval(iv: Sequence[float] | None) -> str | None:
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else None


def _metric_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    primary = results[0]
    fams = list(primary["families"])
    for r in results[1:]:
        fams += [f for f in r["families"] if f not in fams]
    rows = []
    for fam in fams:
        ref = next(r["families"][fam] for r in results if fam in r["families"])
        metric_names = list(
            dict.fromkeys(
                k
                for r in results
                for k, v in r["families"].get(fam, {}).get("metrics", {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            )
        )
        closed = "accuracy" in metric_names
        for k in metric_names:
            values = [r["families"].get(fam, {}).get("metrics", {}).get(k) for r in results]
            finite = [v for v in values if isinstance(v, int | float)]
            best = max(finite) if len(finite) > 1 else None
            cells = [
                {
                    "value": _fmt(v),
                    "interval": _interval(r["families"].get(fam, {}).get("intervals", {}).get(k)),
                    "best": best is not None and v == best,
                    "unparsed": (
                        r["families"].get(fam, {}).get("unparsed")
                        if closed and k == "accuracy"
                        else None
                    ),
                }
                for r, v in zip(results, values, strict=True)
            ]
            rows.append(
                {
                    "family": fam,
                    "metric": k,
                    "n": ref.get("n"),
                    "chance": _fmt(ref.get("chance")) if k == "accuracy" else "-",
                    "cells": cells,
                }
            )
    return rows


def render_cohort_report(
    out_html: str | Path,
    results: Sequence[Mapping[str, Any]],
    title: str = "Evaluation",
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    examples: Sequence[Mapping[str, Any]] = (),
    curves: Mapping[str, str | Path] | None = None,
    slide_pages: Mapping[str, str | Path] | None = None,
    metrics_json: str | Path | None = None,
    excluded: Sequence[Mapping[str, str]] = (),
    left_out: Mapping[str, Any] | None = None,
) -> Path:
    """The cohort summary page of an evaluation run.

    Args:
        out_html: the page to write.
        results: model results, the evaluated model first, then baselines (module doc).
        tables: extra tables, ``{title: {row name (e.g. a model): {column: value}}}``, e.g.
            ``{"Slide-report retrieval": {"hierarchical": {"r1": .5, "mrr": .6}}}``.
        examples: a few prediction records (:meth:`EvalItem.record`), optionally with
            ``page`` (path of the slide page) to link.
        curves: training-curve pictures by caption (e.g. each stage's ``loss.png``).
        slide_pages: slide pages by slide id.
        metrics_json: the run's ``metrics.json``, linked.
        excluded: the cohort's excluded slides (``failures.tsv`` rows), named at the top.
        left_out: ``{"items": n, "slides": [...]}``, test items without a slide in the split.
    """
    if not results:
        raise ValueError("no model results")
    page = Path(out_html)
    extra = []
    for t_title, rows in (tables or {}).items():
        columns = list(dict.fromkeys(c for values in rows.values() for c in values))
        extra.append(
            {
                "title": t_title,
                "columns": columns,
                "rows": [(n, [_fmt(v.get(c)) for c in columns]) for n, v in rows.items()],
            }
        )
    confusions = []
    for fam, r in results[0]["families"].items():
        c = r.get("confusion")
        if c:
            confusions.append(
                {
                    "family": fam,
                    "columns": c["columns"],
                    "rows": list(zip(c["labels"], c["matrix"], strict=True)),
                }
            )
    exs = []
    for ex in examples:
        e = dict(ex)
        e["page"] = relative_link(ex["page"], page) if ex.get("page") else None
        exs.append(e)
    html = _ENV.get_template("cohort.html").render(
        title=title,
        css=_CSS,
        models=[r["name"] for r in results],
        model=results[0]["name"],
        rows=_metric_rows(results),
        tables=extra,
        confusions=confusions,
        examples=exs,
        curves=_links(curves, page),
        slide_pages=_links(slide_pages, page),
        metrics_json=relative_link(metrics_json, page) if metrics_json else None,
        excluded=list(excluded),
        left_out=left_out,
    )
    return _write(page, html)
