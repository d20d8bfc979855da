"""Provenance: code version, config hash and input fingerprints recorded by every store, the
chain of upstream ids, and the fingerprints the evaluation report names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from chain_helpers import run_chain, write_slide

from hwsi_model import __version__
from hwsi_model.data.manifest import read_manifest, write_manifest
from hwsi_model.provenance import (
    cache_fingerprint,
    code_version,
    describe,
    describe_inputs,
    file_fingerprint,
    git_info,
    model_fingerprint,
)
from hwsi_model.samples import Sample

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    root = tmp_path_factory.mktemp("prov")
    build_tiny_encoder(root / "enc", seed=0)
    slide = write_slide(root / "s.tiff")
    paths = run_chain(root / "out", slide, "s", root / "enc")
    return {**paths, "slide": slide, "encoder": root / "enc", "root": root}


def attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]


def test_code_version_in_and_outside_a_checkout(tmp_path):
    code = code_version()
    assert code["hwsi_version"] == __version__
    if (REPO / ".git").exists():
        assert len(code["git_commit"]) == 40 and isinstance(code["git_dirty"], bool)
    assert git_info(tmp_path) == {"git_commit": None, "git_dirty": None}
    assert git_info(REPO / "hwsi_model")["git_commit"] is None  # not the checkout's root


def test_file_fingerprint_hashes_first_and_last_mib(tmp_path):
    f = tmp_path / "big.bin"
    f.write_bytes(bytes(3 * MIB))
    a = file_fingerprint(f)
    assert a["size"] == 3 * MIB and a["kind"] == "file"
    data = bytearray(f.read_bytes())
    data[MIB + 10] = 1  # the middle MiB is not hashed (documented)
    f.write_bytes(bytes(data))
    assert file_fingerprint(f)["partial_sha256"] == a["partial_sha256"]
    data[-1] = 1
    f.write_bytes(bytes(data))
    assert file_fingerprint(f)["partial_sha256"] != a["partial_sha256"]


def test_missing_input_is_recorded_not_raised(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        prov = describe("abc", {"slide": tmp_path / "gone.svs", "none": None})
    assert prov["inputs"] == {"slide": {"kind": "missing", "path": str(tmp_path / "gone.svs")}}
    assert "gone.svs does not exist" in caplog.text
    assert prov["config_hash"] == "abc" and len(prov["id"]) == 16


def test_every_store_records_code_config_and_inputs(chain):
    slide_fp = file_fingerprint(chain["slide"])
    expected = {
        "tiles": ({"slide", "tissue"}, "tiles0"),
        "embeddings": ({"slide", "tiles", "encoder"}, "emb0"),
        "cells": (set(), "cells0"),  # written by the test helper, not segment_step
        "cell_embeddings": ({"slide", "tiles", "selection", "cells", "encoder"}, "cemb0"),
        "cache": ({"tiles", "embeddings", "selection", "cell_embeddings"}, "cache0"),
    }
    for kind, (inputs, chash) in expected.items():
        a = attrs(chain[kind])
        if kind == "cells":
            assert a["config_hash"] == chash
            continue
        prov = a["provenance"]
        assert set(prov["inputs"]) == inputs, kind
        assert prov["config_hash"] == chash and prov["code"] == code_version(), kind
        if "slide" in inputs:
            got = prov["inputs"]["slide"]
            assert got["partial_sha256"] == slide_fp["partial_sha256"]
            assert got["size"] == slide_fp["size"]
    tissue = json.loads((chain["tissue"] / "tissue.json").read_text())
    assert tissue["provenance"]["inputs"]["slide"]["size"] == slide_fp["size"]
    # Upstream stores are named by their own provenance id.
    cache_in = attrs(chain["cache"])["provenance"]["inputs"]
    for up in ("tiles", "embeddings", "cell_embeddings"):
        assert cache_in[up]["kind"] == "store"
        assert cache_in[up]["provenance_id"] == attrs(chain[up])["provenance"]["id"]
    assert cache_in["selection"]["kind"] == "file"
    emb_in = attrs(chain["embeddings"])["provenance"]["inputs"]
    assert emb_in["encoder"]["kind"] == "folder" and len(emb_in["encoder"]["digest"]) == 16


def test_cache_fingerprint_and_manifest_name_the_version(chain, tmp_path):
    fp = cache_fingerprint(chain["cache"])
    a = attrs(chain["cache"])
    assert fp["provenance_id"] == a["provenance"]["id"] and fp["complete"] is True
    assert fp["slide_id"] == "s" and fp["encoder"] == "tiny-vit"
    assert fp["config_hash"] == "cache0" and fp["hwsi_version"] == __version__
    df = write_manifest(
        [chain["cache"]], {"s": Sample("s", str(chain["slide"]))}, tmp_path / "m.csv"
    )
    assert df.loc[0, "provenance_id"] == fp["provenance_id"]
    with pytest.raises(FileNotFoundError):
        cache_fingerprint(tmp_path / "nothing.zarr")
    report = describe_inputs(
        chain["encoder"], [chain["cache"], tmp_path / "x.zarr"], tmp_path / "m.csv"
    )
    assert report["code"] == code_version() and report["caches"][0] == fp
    assert "is not a Zarr store" in report["caches"][1]["error"]
    assert report["model"]["path"] == str(chain["encoder"]) and report["manifest"]["size"] > 0
    assert describe_inputs()["model"] is None


def test_model_fingerprint_changes_with_the_weights(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\x00" * 100)
    a = model_fingerprint(d)
    assert a["provenance_id"] is None and len(a["weights_sha256"]) == 16
    prov = describe("cfg1", {"config": d / "config.json"})
    (d / "provenance.json").write_text(json.dumps(prov))
    b = model_fingerprint(d)
    assert b["weights_sha256"] == a["weights_sha256"]  # provenance.json itself is not hashed
    assert b["provenance_id"] == prov["id"] and b["config_hash"] == "cfg1"
    (d / "model.safetensors").write_bytes(b"\x01" * 100)
    assert model_fingerprint(d)["weights_sha256"] != a["weights_sha256"]


def test_blank_slide_gives_an_explicitly_empty_chain(chain, tmp_path, caplog):
    """No tissue: every store is valid and empty, the manifest says 0 patches and training
    leaves the slide out with a warning (an empty selection CSV used to crash embed_cells)."""
    from hwsi_model.data.stores.cache import validate_cache

    slide = write_slide(tmp_path / "blank.tiff", blank=True)
    with caplog.at_level(logging.WARNING):
        paths = run_chain(tmp_path / "out", slide, "blank", chain["encoder"])
    assert "no tissue found" in caplog.text
    assert validate_cache(paths["cache"]) == []
    assert attrs(paths["cache"])["n_patches"] == 0
    samples = {"blank": Sample("blank", str(slide)), "s": Sample("s", str(chain["slide"]))}
    manifest = tmp_path / "manifest.csv"
    write_manifest([paths["cache"], chain["cache"]], samples, manifest)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rows = read_manifest(manifest)
    assert [r.slide_id for r in rows] == ["s"]
    assert "slide 'blank' has no tissue patches: left out of training" in caplog.text


def test_a_touched_file_is_the_same_input_when_hashed_whole(tmp_path):
    """Snakemake touches a job's outputs when it ends, also those it kept: a file hashed whole
    (<= 2 MiB) with the same content is the same input; a larger file, hashed at its two ends
    only, is not once its mtime moved; content, size or path changes are never the same."""
    import os

    from hwsi_model.provenance import file_fingerprint, same_fingerprint

    small, big = tmp_path / "sel.csv", tmp_path / "slide.bin"
    small.write_text("region,rank,patch_index\n0,0,3\n")
    big.write_bytes(b"\0" * (3 * 1024 * 1024))
    before = {p: file_fingerprint(p) for p in (small, big)}
    for p in (small, big):
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert same_fingerprint(before[small], file_fingerprint(small))
    assert not same_fingerprint(before[big], file_fingerprint(big))
    small.write_text("region,rank,patch_index\n0,0,4\n")  # same size, other content
    assert not same_fingerprint(before[small], file_fingerprint(small))
    moved = tmp_path / "other.csv"
    small.rename(moved)
    assert not same_fingerprint(before[small], file_fingerprint(moved))
