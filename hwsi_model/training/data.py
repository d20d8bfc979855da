"""Training data over the cohort manifest: slides joined to reports (stages 1-2) and to
instruction items (stage 3), a resumable seeded sampler and the collation into padded batches.

A training example is one (slide, text) pair; its slide tensors are read from the slide's cache
(:func:`hwsi_model.embed.cache_store.read_slide_tensors`) in the DataLoader workers, or once into
memory (``in_memory=True``, for small cohorts: workers then share the loaded tensors by fork).
Collation pads the variable-size multi-scale tensors with masks via
:func:`hwsi_model.model.batch.collate_slides` (see :class:`hwsi_model.model.batch.SlideBatch`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from hwsi_model.embed.cache_store import read_slide_tensors
from hwsi_model.model.batch import SlideBatch, SlideTensors, collate_slides
from hwsi_model.model.text_views import TextViews, split_report
from hwsi_model.training.formats import InstructionItem, ReportRecord

log = logging.getLogger(__name__)


@dataclass
class ManifestRow:
    """One row of ``manifest.csv`` (the columns training uses)."""

    slide_id: str
    cache: Path
    split: str
    label: str | None = None
    cohort: str | None = None


def read_manifest(path: str | Path, splits: Sequence[str] | None = None) -> list[ManifestRow]:
    """Rows of the cohort manifest, optionally only those of ``splits``.

    A relative ``cache`` path that does not exist from the working directory is resolved against
    the manifest's folder and then its parent (manifests written by the workflow hold paths
    relative to the repository root). Slides whose cache has no patch (``n_patches`` 0: no
    tissue) are left out with a warning.
    """
    path = Path(path)
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if (r.get("n_patches") or "").strip() == "0":  # a slide without tissue
                log.warning("slide '%s' has no tissue patches: left out of training", r["slide_id"])
                continue
            cache = Path(r["cache"])
            if not cache.is_absolute() and not cache.exists():
                for base in (path.parent, path.parent.parent):
                    if (base / cache).exists():
                        cache = base / cache
                        break
            split = (r.get("split") or "train").strip() or "train"
            rows.append(
                ManifestRow(r["slide_id"], cache, split, r.get("label") or None, r.get("cohort"))
            )
    if splits is not None:
        rows = [r for r in rows if r.split in set(splits)]
    return rows


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
        views=views if all(v is not None for v in views) else None,
        items=[e.item for e in examples],
    )


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded over data-parallel ranks, that can start mid-epoch.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees exactly the data
    the interrupted run would have seen: call :meth:`set_epoch` with the epoch and the number of
    samples (per rank) already consumed in it.
    """

    def __init__(
        self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch`` (padded by wrapping so ranks get equal counts)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world_size)
        order = (order * (1 + per_rank * self.world_size // max(self.n, 1)))[
            : per_rank * self.world_size
        ]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices(self.epoch)[self.start :])

    def __len__(self) -> int:
        return max(0, -(-self.n // self.world_size) - self.start)
