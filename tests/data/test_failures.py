"""Failure placeholders: a slide that fails is excluded, visibly, and can be retried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from hwsi_model.data.current import is_current, recorded_provenance
from hwsi_model.data.failures import (
    FAILED_NAME,
    SlideFailure,
    failure_of,
    find_placeholders,
    read_failures_table,
    remove_placeholders,
    split_failed,
    write_failures_table,
    write_placeholders,
)
from hwsi_model.errors import ConfigError, MissingMppError, SlideOpenError
from hwsi_model.jobs.isolation import UpstreamFailedError, require_not_failed, run_isolated
from hwsi_model.samples import Sample


def _outputs(out: Path) -> list[Path]:
    return [
        out / "tiles" / "s.zarr",
        out / "tissue" / "s.v2",  # a slide id with a dot: still a folder
        out / "qc" / "tiling" / "s.png",
        out / "selection" / "s.csv",
        out / "selection" / "s.json",
    ]


def _isolated_failure(tmp_path: Path, exc: Exception, **kw):
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"not a slide")
    out = tmp_path / "out"

    def fail():
        raise exc

    outputs = _outputs(out)
    result = run_isolated("prepare_slide", Sample("s", str(slide)), outputs, fail, out,
                          folders=outputs[:2], **kw)  # fmt: skip
    return result, out


def test_a_slide_input_error_becomes_placeholders_that_are_never_current(tmp_path):
    failure, out = _isolated_failure(tmp_path, SlideOpenError("slide 's': OpenSlide cannot open"))
    assert isinstance(failure, SlideFailure)
    assert (failure.slide_id, failure.job, failure.error) == (
        "s",
        "prepare_slide",
        "SlideOpenError",
    )
    assert failure.input["kind"] == "file" and failure.input["size"] == len(b"not a slide")
    assert failure.outputs[0] == "tiles/s.zarr"  # relative to outdir
    tiles, tissue, qc, csv, record = _outputs(out)
    # Folders hold only the record; no zarr.json, so no reader takes them for a store.
    assert sorted(p.name for p in tiles.iterdir()) == [FAILED_NAME]
    assert failure_of(tiles) == failure and failure_of(tissue) == failure
    with Image.open(qc) as img:  # a picture saying why, for a user browsing the QC folder
        assert img.info["hwsi_failed"] == "1" and img.width > 100
    assert csv.read_text().startswith("# FAILED: s: prepare_slide (input): slide 's'")
    assert json.loads(record.read_text())["reason"] == "slide 's': OpenSlide cannot open"
    for p in (tiles, tissue, csv):
        assert recorded_provenance(p) is None
        assert not is_current(p, "any-hash", {})


def test_a_finished_output_is_replaced_and_real_outputs_survive_retry(tmp_path):
    out = tmp_path / "out"
    tiles = out / "tiles" / "s.zarr"
    tiles.mkdir(parents=True)
    (tiles / "zarr.json").write_text("{}")
    real = out / "tiles" / "good.zarr"
    real.mkdir()
    (real / "zarr.json").write_text("{}")
    real_png = out / "qc" / "tiling" / "good.png"
    real_png.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(real_png)
    failure = SlideFailure("s", "prepare_slide", "tiles", "SlideReadError", "cannot decode",
                           outputs=("tiles/s.zarr", "qc/tiling/s.png"))  # fmt: skip
    write_placeholders([tiles, out / "qc" / "tiling" / "s.png"], failure, folders=[tiles])
    assert not (tiles / "zarr.json").exists()
    assert [f.slide_id for _, f in find_placeholders(out)] == ["s"]
    removed = remove_placeholders(out)
    assert sorted(p.relative_to(out).as_posix() for p in removed) == [
        "qc/tiling/s.png",
        "tiles/s.zarr",
    ]
    assert (real / "zarr.json").is_file() and real_png.is_file()
    assert find_placeholders(out) == []


def test_stop_and_non_slide_errors_still_fail(tmp_path):
    with pytest.raises(MissingMppError):
        _isolated_failure(tmp_path, MissingMppError("no mpp"), on_slide_error="stop")
    with pytest.raises(ConfigError, match="bad key"):  # a configuration error is not isolated
        _isolated_failure(tmp_path, ConfigError("bad key"))
    with pytest.raises(ConfigError, match="on_slide_error"):
        _isolated_failure(tmp_path, MissingMppError("x"), on_slide_error="ignore")
    assert not (tmp_path / "out").exists()
    ok = run_isolated("j", Sample("s", "x"), [], lambda: 42, tmp_path)
    assert ok == 42


def test_downstream_job_records_the_first_failure_and_the_table_names_it(tmp_path):
    first, out = _isolated_failure(tmp_path, MissingMppError("slide 's': add an 'mpp' column"))
    tiles = out / "tiles" / "s.zarr"
    with pytest.raises(UpstreamFailedError) as err:
        require_not_failed(tiles)
    cache = out / "cache" / "s.zarr"
    second = run_isolated("extract_slide", Sample("s", str(tmp_path / "s.svs")), [cache],
                          lambda: require_not_failed(tiles), out, folders=[cache])  # fmt: skip
    assert second.job == "extract_slide" and second.cause == first.to_dict()
    assert second.first == first and "add an 'mpp' column" in str(err.value)
    good = out / "cache" / "g.zarr"
    good.mkdir()
    kept, failed = split_failed([good, cache])
    assert kept == [good] and failed == [second]
    write_failures_table(failed, out / "failures.tsv")
    (row,) = read_failures_table(out / "failures.tsv")
    assert row["slide_id"] == "s" and row["job"] == "prepare_slide"
    assert row["error"] == "MissingMppError" and "mpp" in row["reason"]
    write_failures_table([], out / "none.tsv")
    assert read_failures_table(out / "none.tsv") == []
    assert (out / "none.tsv").read_text().startswith("slide_id\tjob\t")


def test_manifest_leaves_failed_and_missing_slides_out_and_lists_them(tmp_path):
    import pandas as pd

    from hwsi_model.data.manifest import read_manifest, write_manifest

    cache = tmp_path / "cache" / "s.zarr"
    failure = SlideFailure("s", "extract_slide", "segment_cells", "SlideReadError", "bad tile")
    write_placeholders([cache], failure, folders=[cache])
    df = write_manifest([cache], {}, tmp_path / "manifest.csv", tmp_path / "failures.tsv",
                        missing={"gone": "slides/gone.svs"})  # fmt: skip
    assert df.empty and read_manifest(tmp_path / "manifest.csv") == []
    table = pd.read_csv(tmp_path / "failures.tsv", sep="\t").set_index("slide_id")
    assert table.loc["s", "step"] == "segment_cells"
    assert table.loc["gone", "job"] == "plan"
    assert table.loc["gone", "reason"] == "slide 'gone': file not found: slides/gone.svs"


def test_a_batch_skips_members_whose_preparation_failed(tmp_path):
    """extract_batch goes past a slide whose prepare batch left placeholders: no model is
    loaded for it, and its GPU-chain outputs become placeholders carrying the first failure."""
    from hwsi_model.data.layout import OutputLayout
    from hwsi_model.jobs.extract import ExtractSettings, extract_batch

    layout = OutputLayout(str(tmp_path / "out"))
    failure = SlideFailure("s", "prepare_slide", "tissue", "MissingMppError", "no mpp")
    write_placeholders([layout.tiles("s")], failure, folders=[layout.tiles("s")])
    settings = ExtractSettings.from_workflow({
        "encoder": "tiny-vit", "checkpoint": str(tmp_path / "no_encoder"),
        "extract": {"num_workers": 0, "rows_per_item": 1, "device": "cpu", "precision": "fp32"},
        "selection": {"n_candidates": 4, "top_k": 2, "query": "slide_mean", "query_file": ""},
        "cells_model": str(tmp_path / "no_stardist"),
        "cells": {"mpp": 0.5, "patches": "selected", "context_um": 16.0, "block": 4,
                  "prob_thresh": None, "nms_thresh": None, "min_hematoxylin": 0.03},
        "hashes": dict.fromkeys(
            ("embeddings", "selection", "cells", "cell_embeddings", "cache"), "h"),
    })  # fmt: skip
    record = tmp_path / "batch.json"
    results = extract_batch([Sample("s", str(tmp_path / "s.svs"))], layout, settings, record)
    assert results == {
        "s": {"excluded": "prepare_slide (tissue): no mpp", "error": "MissingMppError"}
    }
    assert json.loads(record.read_text())["slides"] == results
    cache = failure_of(layout.cache("s"))
    assert cache.job == "extract_batch" and cache.first == failure
    assert find_placeholders(layout.outdir)  # the selection CSV, QC picture, ... too
    assert not Path(layout.selection("s")).read_text().startswith("slide_id")


def test_a_batch_isolates_each_slide_even_from_unexpected_errors(tmp_path, caplog):
    """In a job of several slides a bug on one slide excludes that slide alone (failing the job
    would make Snakemake remove the outputs the others finished); its traceback is logged. A
    configuration error, and any error under on_slide_error: stop, still fail the job."""
    from hwsi_model.jobs.isolation import run_batch

    out = tmp_path / "out"
    samples = [Sample(s, str(tmp_path / f"{s}.svs")) for s in ("a", "b", "c")]

    def outputs_of(sid):
        return [(out / "tiles" / f"{sid}.zarr", True), (out / "qc" / f"{sid}.png", False)]

    def run_one(sample):
        if sample.slide_id == "b":
            raise RuntimeError("boom on b")
        if sample.slide_id == "c":
            raise SlideOpenError("c is not a slide")
        return "done"

    results = run_batch("prepare_batch", samples, run_one, outputs_of, out)
    assert results["a"] == "done"
    b, c = results["b"], results["c"]
    assert (b.error, b.reason, b.job) == ("RuntimeError", "boom on b", "prepare_batch")
    assert c.error == "SlideOpenError"
    assert failure_of(out / "tiles" / "b.zarr") == b
    assert not (out / "tiles" / "a.zarr").exists()  # a's outputs are its own job's business
    assert "Traceback" in caplog.text and "boom on b" in caplog.text

    def config_error(sample):
        raise ConfigError("bad key")

    with pytest.raises(ConfigError):
        run_batch("prepare_batch", samples, config_error, outputs_of, tmp_path / "o2")
    with pytest.raises(RuntimeError):
        run_batch("prepare_batch", samples, run_one, outputs_of, tmp_path / "o3", "stop")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
