"""Manifest, datasets joined to the caches, collation and the resumable sampler."""

from __future__ import annotations

from pathlib import Path

from hwsi_model.data.manifest import read_manifest
from hwsi_model.data.pairs import PairDataset, SlideStore, collate_examples
from hwsi_model.data.text_records import read_instructions, read_reports
from hwsi_model.training.sampler import ResumableSampler


def test_datasets_join_manifest_and_collate(cohort: dict[str, Path]) -> None:
    rows = read_manifest(cohort["manifest"], splits=["train"])
    assert len(rows) == 6 and all(r.cache.exists() for r in rows)
    reports = read_reports(cohort["reports"])
    for in_memory in (False, True):
        store = SlideStore(rows, in_memory=in_memory)
        pairs = PairDataset(store, None, reports)  # stage 1: report pairs
        assert len(pairs) == 6
        items = read_instructions(cohort["vqa_train"]) + read_instructions(cohort["vqa_val"])
        inst = PairDataset(store, items, reports)  # val items are dropped (not in this split)
        assert len(inst) == 6
        batch = collate_examples([inst[0], inst[1], inst[2]])
        assert batch.slides.patch_emb.shape[0] == 3 and batch.slides.patch_mask.any()
        assert batch.views is not None and batch.questions[0].startswith("What is")
        assert batch.answers[0].endswith(".") and batch.slide_ids == inst.slide_ids[:3]


def test_sampler_is_seeded_sharded_and_resumable() -> None:
    s = ResumableSampler(10, seed=3)
    s.set_epoch(1)
    full = list(s)
    assert sorted(full) == list(range(10)) and full != list(range(10))
    s.set_epoch(1, start=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(2)
    assert list(s) != full  # another epoch, another order
    ranks = [ResumableSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(1)
    shards = [list(r) for r in ranks]
    assert all(len(x) == 4 for x in shards)  # padded by wrapping to equal counts
    assert set().union(*map(set, shards)) == set(range(10))
