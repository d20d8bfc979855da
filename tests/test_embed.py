"""Embedding stage: streaming writer, dataset, cell pooling, cache store and its validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

from hwsi_model.data.stores.cache import (
    ARRAYS,
    open_cohort_dask,
    read_cache,
    read_slide_tensors,
    validate_cache,
    write_cache,
)
from hwsi_model.data.stores.zarr_io import RowWriter
from hwsi_model.embed.cell_features import pool_tokens, standardise_morphometrics
from hwsi_model.embed.dataset import SlidePatchDataset, row_ranges
from hwsi_model.errors import StoreError
from hwsi_model.tiling.steps import tiling_step, tissue_step
from hwsi_model.tiling.tissue import TissueParams


def test_row_writer_streams_in_chunks(tmp_path):
    arr = zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array(
        "emb", shape=(23, 4), dtype="float16", chunks=(5, 4)
    )
    w = RowWriter(arr)
    data = np.arange(92, dtype=np.float32).reshape(23, 4)
    for a, b in [(0, 3), (3, 11), (11, 12), (12, 23)]:
        w.write(a, data[a:b])
        assert w.flushed % 5 == 0 and w.next_row - w.flushed < 5 + (b - a)
    w.close()
    np.testing.assert_array_equal(arr[...], data.astype(np.float16))
    with pytest.raises(ValueError, match="in order"):
        RowWriter(arr).write(3, data[:2])


def test_row_ranges_stay_inside_regions():
    offsets = np.array([0, 5, 5, 12])
    assert row_ranges(offsets, 4) == [(0, 4), (4, 5), (5, 9), (9, 12)]


def test_dataset_pickles_without_reader(cmu_slide, tmp_path):
    tissue_step(cmu_slide, "cmu", tmp_path / "t", TissueParams())
    tiles = tiling_step("cmu", tmp_path / "t", tmp_path / "cmu.zarr", tmp_path / "qc.png")
    ds = SlidePatchDataset(str(cmu_slide), "cmu", tiles, max_patches=16)
    start, end, x = ds[0]
    assert ds._reader is not None
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    assert clone._reader is None
    s2, e2, x2 = clone[0]
    assert (start, end) == (s2, e2) and x.shape == (end - start, 256, 256, 3)
    assert bool((x == x2).all())


def test_pool_tokens_weights_by_area():
    tokens = np.zeros((4, 4, 2), np.float32)
    tokens[0, 0] = [1, 0]
    tokens[0, 1] = [0, 1]
    # a square nucleus covering 3/4 of token (0,0) and 1/4 of token (0,1) (tokens of 16 px)
    poly = np.array([[4, 2], [20, 2], [20, 14], [4, 14]], np.float32)
    out = pool_tokens(tokens, poly[None], np.array([[12, 8]], np.float32), 64)
    assert out.shape == (1, 2)
    assert out[0, 0] > out[0, 1] > 0 and abs(out[0].sum() - 1) < 1e-5
    # a nucleus smaller than a pixel falls back to the token under its centroid
    tiny = np.array([[[30.2, 40.2]] * 4], np.float32)
    tokens[2, 1] = [5, 5]
    assert np.allclose(pool_tokens(tokens, tiny, np.array([[30.2, 40.2]]), 64), [[5, 5]])


def test_morphometrics_keep_slide_level_differences():
    small = np.array([[20, 16, 0.5, 0.95, 0.9, 0.1]] * 3, np.float32)
    large = np.array([[120, 40, 0.8, 0.85, 0.9, 0.2]] * 3, np.float32)
    a, b = standardise_morphometrics(small), standardise_morphometrics(large)
    assert (b[:, 0] > a[:, 0] + 1).all()  # fixed reference: a larger nucleus stays larger


def toy_cache(n=10, r=2, s=3, k=2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    region = np.repeat(np.arange(r), n // r)
    grid = np.full((r, s, s), -1, np.int64)
    for ri in range(r):
        rows = np.flatnonzero(region == ri)
        grid[ri].flat[: len(rows)] = rows
    selected = np.array([[0, 1], [5, -1]], np.int64)
    return {
        "patch_emb": rng.normal(size=(n, 8)).astype(np.float16),
        "patch_coords": np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64),
        "patch_region": region.astype(np.int64),
        "region_grid": grid,
        "region_pos": np.array([[0, 0], [0, 1]], np.int64),
        "selected": selected,
        "cell_emb": rng.normal(size=(5, 4)).astype(np.float16),
        "cell_pos": rng.uniform(size=(5, 2)).astype(np.float32),
        "cell_offsets": np.array([0, 2, 2, 5], np.int64),
    }


def test_cache_round_trip_and_tensors(tmp_path):
    arrays = toy_cache()
    write_cache(tmp_path / "s.zarr", arrays, {"slide_id": "s", "patch_dim": 8})
    assert validate_cache(tmp_path / "s.zarr") == []
    back, attrs = read_cache(tmp_path / "s.zarr")
    for name in ARRAYS:
        np.testing.assert_array_equal(back[name], arrays[name])
        assert back[name].dtype == arrays[name].dtype
    assert attrs["complete"] is True and attrs["schema_version"] == 1
    t = read_slide_tensors(tmp_path / "s.zarr")
    t.validate()  # the model's own contract check agrees
    assert t.num_selected == 3 and t.slide_id == "s"
    lazy = open_cohort_dask([tmp_path / "s.zarr", tmp_path / "s.zarr"])
    assert lazy.shape == (20, 8)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda a: a["selected"].__setitem__((1, 0), 1), "not in its region"),
        (lambda a: a.__setitem__("cell_offsets", np.array([0, 2, 2, 4])), "cell_offsets"),
        (lambda a: a["cell_pos"].__setitem__((0, 0), 1.5), "outside its patch"),
        (lambda a: a["region_grid"].__setitem__((0, 0, 0), 7), "another region"),
    ],
)
def test_validator_names_the_problem(tmp_path, damage, needle):
    arrays = toy_cache()
    damage(arrays)
    write_cache(tmp_path / "bad.zarr", arrays, {"slide_id": "bad"})
    problems = validate_cache(tmp_path / "bad.zarr")
    assert any(needle in p for p in problems), problems
    with pytest.raises(StoreError, match=needle):
        read_slide_tensors(tmp_path / "bad.zarr")


def test_unfinished_cache_is_refused(tmp_path):
    write_cache(tmp_path / "s.zarr", toy_cache(), {"slide_id": "s"})
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="a")
    g.attrs["complete"] = False  # as if killed before the finished marker
    assert "incomplete" in validate_cache(tmp_path / "s.zarr")[0]
    assert validate_cache(tmp_path / "missing.zarr") == ["missing or not a Zarr group"]


def test_embeddings_identical_across_runs_and_worker_counts(cmu_slide, tmp_path):
    from hwsi_model.data.stores.patch_embeddings import read_embeddings
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder
    from hwsi_model.embed.extract import ExtractParams
    from hwsi_model.embed.steps import EncoderRun, embed_patches_step
    from hwsi_model.samples import Sample

    tissue_step(cmu_slide, "cmu", tmp_path / "t", TissueParams())
    tiling_step("cmu", tmp_path / "t", tmp_path / "cmu.zarr", tmp_path / "qc.png", region_size=4)
    build_tiny_encoder(tmp_path / "enc", seed=0)
    outs = []
    for i, workers in enumerate((0, 2, 2)):
        out = tmp_path / f"emb{i}.zarr"
        params = ExtractParams(num_workers=workers, rows_per_item=7)
        embed_patches_step(
            Sample("cmu", str(cmu_slide)),
            tmp_path / "cmu.zarr",
            EncoderRun("tiny-vit", str(tmp_path / "enc"), params),
            out,
        )
        outs.append(read_embeddings(out))
    emb, attrs = outs[0]
    assert emb.dtype == np.float16 and emb.shape[0] == attrs["n_patches"] > 0
    assert attrs["encoder_checkpoint_hash"] and attrs["patch_dim"] == emb.shape[1]
    for other, _ in outs[1:]:
        np.testing.assert_array_equal(other, emb)
    assert np.unique(emb, axis=0).shape[0] == emb.shape[0]  # patches differ


def test_hwsi_check_lists_bad_caches(tmp_path, capsys):
    from hwsi_model.cli import main

    write_cache(tmp_path / "cache" / "good.zarr", toy_cache(), {"slide_id": "good"})
    bad = toy_cache()
    bad["cell_pos"][0, 0] = 2.0
    write_cache(tmp_path / "cache" / "bad.zarr", bad, {"slide_id": "bad"})
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok   cache/good" in out
    assert "BAD  cache/bad: a cell centroid lies outside its patch" in out
    (tmp_path / "cache" / "bad.zarr").rename(tmp_path / "bad.zarr")
    assert main(["check", str(tmp_path)]) == 0
