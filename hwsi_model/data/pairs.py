"""(slide, text) pairs over the cohort manifest: slides joined to reports (stages 1-2) and to
instruction items (stage 3), and their collation into padded batches. Training and evaluation
both read slides through these.

An example is one (slide, text) pair; its slide tensors are read from the slide's cache
(:func:`hwsi_model.data.stores.cache.read_slide_tensors`) in the DataLoader workers, or once into
memory (``in_memory=True``, for small cohorts: workers then share the loaded tensors by fork).
Collation pads the variable-size multi-scale tensors with masks via
:func:`hwsi_model.model.batch.collate_slides` (see :class:`hwsi_model.model.batch.SlideBatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import Dataset

from hwsi_model.data.manifest import ManifestRow
from hwsi_model.data.stores.cache import read_slide_tensors
from hwsi_model.data.text_records import InstructionItem, ReportRecord
from hwsi_model.model.batch import SlideBatch, SlideTensors, collate_slides
from hwsi_model.model.text_views import TextViews, split_report

log = logging.getLogger(__name__)


class SlideStore:
    """Slide tensors by id, read from the caches on demand or held in memory."""

    def __init__(self, rows: Sequence[ManifestRow], in_memory: bool = False):
        self.paths = {r.slide_id: r.cache for r in rows}
        self._memory: dict[str, SlideTensors] = {}
        if in_memory:
            for sid in self.paths:
                self._memory[sid] = self._read(sid)
            log.info("loaded %d slides into memory", len(self._memory))

    def _read(self, slide_id: str) -> SlideTensors:
        s = read_slide_tensors(self.paths[slide_id])
        s.slide_id = s.slide_id or slide_id
        return s

    def __contains__(self, slide_id: str) -> bool:
        return slide_id in self.paths

    def __getitem__(self, slide_id: str) -> SlideTensors:
        return self._memory.get(slide_id) or self._read(slide_id)


@dataclass
class Example:
    """One training example: a slide, its text, and (when the slide has a report) its views."""

    slide: SlideTensors
    item: InstructionItem | None = None
    report: str | None = None
    views: TextViews | None = None


@dataclass
class TrainBatch:
    """A collated batch: ``slides`` (:class:`SlideBatch`, B slides) and B texts."""

    slides: SlideBatch
    slide_ids: list[str]
    questions: list[str]
    answers: list[str]
    histories: list[list[tuple[str, str]]]
    views: list[TextViews] | None
    items: list[InstructionItem | None]

    def __len__(self) -> int:
        return len(self.slide_ids)


class PairDataset(Dataset):
    """(slide, text) pairs joined to the manifest by ``slide_id``.

    Args:
        store: the slides.
        items: instruction items (stages 2-3) or ``None`` for report pairs (stage 1).
        reports: one report per slide; gives the text views (auxiliary losses) and, for stage 1,
            the pairs themselves.
    Pairs whose slide is not in ``store`` are dropped (logged): a manifest split selects slides.
    """

    def __init__(
        self,
        store: SlideStore,
        items: Sequence[InstructionItem] | None = None,
        reports: Sequence[ReportRecord] | None = None,
    ):
        self.store = store
        self.reports = {r.slide_id: r.report for r in reports or []}
        self._views: dict[str, TextViews] = {}
        if items is None:
            if not self.reports:
                raise ValueError("give instruction items or reports")
            self.items: list[InstructionItem | None] = []
            self.slide_ids = [s for s in self.reports if s in store]
            self.items = [None] * len(self.slide_ids)
        else:
            kept = [it for it in items if it.slide_id in store]
            if len(kept) < len(items):
                log.info(
                    "%d of %d items have no slide in this split", len(items) - len(kept), len(items)
                )
            self.items = list(kept)
            self.slide_ids = [it.slide_id for it in kept]
        if not self.slide_ids:
            raise ValueError("no example: no report/item matches a slide of the manifest split")

    def __len__(self) -> int:
        return len(self.slide_ids)

    def views_of(self, slide_id: str) -> TextViews | None:
        report = self.reports.get(slide_id)
        if report is None:
            return None
        if slide_id not in self._views:
            self._views[slide_id] = split_report(report)
        return self._views[slide_id]

    def __getitem__(self, i: int) -> Example:
        sid = self.slide_ids[i]
        return Example(
            slide=self.store[sid],
            item=self.items[i],
            report=self.reports.get(sid),
            views=self.views_of(sid),
        )


def collate_examples(examples: list[Example]) -> TrainBatch:
    """Pad the slides (:func:`collate_slides`) and gather the texts; views only if all have one."""
    views = [e.views for e in examples]
    return TrainBatch(
        slides=collate_slides([e.slide for e in examples]),
        slide_ids=[e.slide.slide_id for e in examples],
        questions=[e.item.question if e.item else "" for e in examples],
        answers=[e.item.answer if e.item else (e.report or "") for e in examples],
        histories=[e.item.history if e.item else [] for e in examples],
        views=views if all(v is not None for v in views) else None,
        items=[e.item for e in examples],
    )
