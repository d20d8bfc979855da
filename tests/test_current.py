"""A job of several steps keeps the outputs that are current and redoes the rest
(hwsi_model/data/current.py, hwsi_model/jobs): in process, on a small synthetic slide."""

from __future__ import annotations

import json
import os
from dataclasses import replace

from chain_helpers import TOP_K, run_chain, write_slide
from test_workflow import snapshot

from hwsi_model.data.current import is_current, record_path, recorded_provenance
from hwsi_model.jobs.prepare import PrepareOutputs, PrepareSettings, prepare_slide
from hwsi_model.samples import Sample
from hwsi_model.selection.steps import select_step, selection_csv_inputs
from hwsi_model.tiling.tissue import TissueParams

SETTINGS = PrepareSettings(
    tissue=TissueParams(),
    mpp=0.5,
    patch_size=256,
    region_size=2,
    mpp_tolerance=0.05,
    min_tissue_fraction=0.25,
    tissue_hash="t0",
    tiles_hash="g0",
)


def test_prepare_keeps_current_steps_and_redoes_what_changed(tmp_path):
    slide = write_slide(tmp_path / "s.tiff")
    out = PrepareOutputs(
        tmp_path / "tissue" / "s", tmp_path / "tiles" / "s.zarr", tmp_path / "qc.png"
    )
    sample = Sample("s", str(slide))
    first = prepare_slide(sample, out, SETTINGS)
    assert (first.ran, first.kept) == (["tissue", "tiles"], [])
    mask = snapshot(tmp_path / "tissue")
    done = {**mask, **snapshot(tmp_path / "tiles")}

    again = prepare_slide(sample, out, SETTINGS)  # nothing changed: nothing is rewritten
    assert (again.ran, again.kept) == ([], ["tissue", "tiles"])
    assert {**snapshot(tmp_path / "tissue"), **snapshot(tmp_path / "tiles")} == done
    # Snakemake touches a marker inside a directory output whenever its job runs (also when the
    # job kept the folder): the mask is still the same input of the grid.
    for folder in (out.tissue, out.tiles):
        (folder / ".snakemake_timestamp").touch()
    assert prepare_slide(sample, out, SETTINGS).ran == []

    # A grid parameter (its hash): the grid is redone, the mask kept byte for byte.
    grid = prepare_slide(sample, out, replace(SETTINGS, patch_size=128, tiles_hash="g1"))
    assert (grid.ran, grid.kept) == (["tiles"], ["tissue"])
    assert snapshot(tmp_path / "tissue") == mask
    # The QC picture is part of the grid's output: missing, the grid step runs again.
    os.remove(out.qc)
    assert prepare_slide(sample, out, replace(SETTINGS, patch_size=128, tiles_hash="g1")).ran == [
        "tiles"
    ]
    # The sheet's mpp is an input of the mask: both steps run.
    mpp = prepare_slide(replace(sample, mpp=0.5), out, SETTINGS)
    assert mpp.ran == ["tissue", "tiles"]
    # The slide file rewritten (new mtime): both steps run, then are current again.
    st = slide.stat()
    os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prepare_slide(sample, out, SETTINGS).ran == ["tissue", "tiles"]
    assert prepare_slide(sample, out, SETTINGS).ran == []


def test_a_store_is_current_only_for_its_hash_inputs_and_when_complete(tmp_path):
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    build_tiny_encoder(tmp_path / "enc", seed=0)
    slide = write_slide(tmp_path / "s.tiff")
    p = run_chain(tmp_path / "out", slide, "s", tmp_path / "enc", steps=4)
    sel_inputs = selection_csv_inputs(p["embeddings"], p["tiles"], None)
    # The selection CSV's record beside it names its parameters and inputs.
    assert record_path(p["selection"]) == p["selection"].with_suffix(".json")
    assert recorded_provenance(p["selection"])["inputs"].keys() == {"embeddings", "tiles"}
    assert is_current(p["selection"], "", sel_inputs)
    assert not is_current(p["selection"], "other-hash", sel_inputs)
    # Another input path, or an input that changed since, is not current.
    assert not is_current(p["selection"], "", {**sel_inputs, "tiles": p["embeddings"]})
    select_step(p["embeddings"], p["tiles"], tmp_path / "sel2.csv", 4, TOP_K, config_hash="x")
    assert is_current(tmp_path / "sel2.csv", "x", sel_inputs)
    emb_attrs = json.loads((p["embeddings"] / "zarr.json").read_text())
    emb_attrs["attributes"]["provenance"]["id"] = "rewritten"
    (p["embeddings"] / "zarr.json").write_text(json.dumps(emb_attrs))
    assert not is_current(p["selection"], "", sel_inputs)
    # A store without its finished marker, or without a record at all, is never current.
    cache_like = json.loads((p["tiles"] / "zarr.json").read_text())
    cache_like["attributes"]["complete"] = False
    (p["tiles"] / "zarr.json").write_text(json.dumps(cache_like))
    assert recorded_provenance(p["tiles"]) is None
    record_path(p["selection"]).unlink()
    assert recorded_provenance(p["selection"]) is None
    assert recorded_provenance(tmp_path / "missing.zarr") is None


def test_slide_batches_keep_cohorts_apart_and_rows_in_order():
    from hwsi_model.jobs.batches import batch_rule_name, slide_batches

    samples = {
        f"s{i}": Sample(f"s{i}", f"s{i}.svs", cohort="a b" if i < 5 else "c") for i in range(7)
    }
    batches = slide_batches(samples, 2)
    assert list(batches.values()) == [["s0", "s1"], ["s2", "s3"], ["s4"], ["s5", "s6"]]
    names = list(batches)
    assert names[0].startswith("a_b-") and names[0].endswith(".0") and names[3].startswith("c-")
    # Appending a cohort keeps every existing batch as it was.
    more = {**samples, "t0": Sample("t0", "t0.svs", cohort="d")}
    assert {k: v for k, v in slide_batches(more, 2).items() if k in batches} == batches
    # Each batch has its own rule, named as a Python identifier, distinct per batch.
    rules = {batch_rule_name("prepare_batch", b) for b in batches}
    assert len(rules) == len(batches) and all(r.isidentifier() for r in rules)
    # Cohorts that clean to the same name stay apart; no cohort is a cohort of its own.
    odd = {"x": Sample("x", "x", cohort="a/b"), "y": Sample("y", "y", cohort="a b")}
    assert len(slide_batches(odd, 4)) == 2
    assert next(iter(slide_batches({"z": Sample("z", "z")}, 4))).startswith("sheet-")
