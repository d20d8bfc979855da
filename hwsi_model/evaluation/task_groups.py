"""Task groups: results laid out as WSI-Bench's tables lay them out.

WSI-Bench (WSI-LLaVA, Liang et al. 2025) reports its test set in three capabilities:
**morphological analysis**, **diagnosis** and **treatment planning**. Its files carry no group
column, only a task name (the ``metadata`` of ``WSI-Bench-test.jsonl``: Morphology, Feature,
Classification, Report, Caption, cellular, tissue, Stage, infiltration, Grade, Subtype,
Treatment, Prognosis; or the file name, e.g. ``WSI-Bench_Report.json``). Which task belongs to
which capability is therefore our reading of the paper, kept in one map that a config can
replace (``evaluation.task_groups``: group -> list of keywords):

=========================  ==========================================================
group                      a task whose name holds one of these words
=========================  ==========================================================
``morphological_analysis`` morphology, morphological, tissue, cellular, cell, infiltration,
                           caption, description
``diagnosis``              diagnosis, diagnostic, classification, feature, grade, report
``treatment_planning``     treatment, stage, staging, subtype, prognosis, therapy
=========================  ==========================================================

Task names are matched word by word after lower-casing and splitting at anything not a
letter or digit (``WSI-Bench_Report`` -> ``wsi``, ``bench``, ``report``); the first group of the
map with a matching word wins; a task that matches none is ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

OTHER = "other"

DEFAULT_TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "morphological_analysis": (
        "morphology", "morphological", "tissue", "cellular", "cell", "infiltration",
        "caption", "description",
    ),
    "diagnosis": ("diagnosis", "diagnostic", "classification", "feature", "grade", "report"),
    "treatment_planning": ("treatment", "stage", "staging", "subtype", "prognosis", "therapy"),
}  # fmt: skip

_WORD = re.compile(r"[a-z0-9]+")


def check_task_groups(groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """A validated copy of a group -> keywords map (a config's ``evaluation.task_groups``)."""
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("task groups must be a non-empty mapping of group -> keywords")
    out = {}
    for name, words in groups.items():
        if isinstance(words, str) or not words or not all(isinstance(w, str) for w in words):
            raise ValueError(f"task group {name!r}: give a list of keywords, got {words!r}")
        out[str(name)] = tuple(w.lower() for w in words)
    return out


def task_group(task: str, groups: Mapping[str, Sequence[str]] | None = None) -> str:
    """The group of a task name (module doc), or :data:`OTHER`."""
    words = set(_WORD.findall(task.lower()))
    for name, keys in (groups or DEFAULT_TASK_GROUPS).items():
        if words.intersection(keys):
            return name
    return OTHER
