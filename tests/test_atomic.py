import subprocess
import sys
import textwrap

import pytest

from hwsi_model.atomic import atomic_output, write_text_atomic
from hwsi_model.data.stores.tiles import read_tiles
from hwsi_model.tiling.steps import tiling_step, tissue_step
from hwsi_model.tiling.tissue import TissueParams


def test_failed_write_leaves_previous_output(tmp_path):
    final = tmp_path / "out.txt"
    write_text_atomic(final, "old")
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_output_replaces_existing(tmp_path):
    final = tmp_path / "d"
    for text in ("one", "two"):
        with atomic_output(final) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(text)
    assert (final / "f").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_killed_tiling_job_leaves_nothing_that_looks_complete(cmu_slide, tmp_path):
    tissue_dir = tmp_path / "tissue" / "cmu"
    tissue_step(cmu_slide, "cmu", tissue_dir, TissueParams())
    store = tmp_path / "tiles" / "cmu.zarr"
    # A job killed (SIGKILL-like, no clean-up) after writing a few arrays of the store.
    code = textwrap.dedent(
        f"""
        import os
        import hwsi_model.data.stores.tiles as store
        real, n = store.put_array, []
        def dying(group, name, data):
            real(group, name, data)
            n.append(name)
            if len(n) == 3:
                os._exit(137)
        store.put_array = dying
        from hwsi_model.tiling.steps import tiling_step
        tiling_step("cmu", {str(tissue_dir)!r}, {str(store)!r}, {str(tmp_path / "qc.png")!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert not store.exists()
    leftovers = list(store.parent.glob(".cmu.zarr.tmp-*"))
    assert len(leftovers) == 1
    # The next run completes and removes the leftover.
    tiling_step("cmu", tissue_dir, store, tmp_path / "qc.png")
    tiles, attrs = read_tiles(store)
    assert len(tiles) == attrs["n_patches"] > 0
    assert not list(store.parent.glob(".cmu.zarr.tmp-*"))
