"""Robustness: a disk full or a killed job during a Zarr write, a slide that disappears between
runs, and ``hwsi check`` listing every bad store of a cohort with its reason. (Corrupt,
unopenable and mpp-less slides and blank slides are covered in test_workflow.py,
test_tiling.py and test_provenance.py; training resume in tests/training/test_stages.py.)"""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zarr
from chain_helpers import TOP_K, run_chain, write_slide
from test_workflow import SUMMARY, planned_jobs, snakemake, snapshot, write_cohort

from hwsi_model.cli import main as hwsi
from hwsi_model.data.check import check_cohort
from hwsi_model.embed.steps import build_cache_step
from hwsi_model.tiling.steps import tiling_step


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    root = tmp_path_factory.mktemp("robust")
    build_tiny_encoder(root / "enc", seed=0)
    slide = write_slide(root / "s.tiff")
    paths = run_chain(root / "out", slide, "s", root / "enc")
    return {**paths, "slide": slide, "out": root / "out", "encoder": root / "enc"}


def rebuild_cache(paths: dict[str, Path], out: Path | None = None) -> None:
    build_cache_step(
        "s", paths["tiles"], paths["embeddings"], paths["selection"],
        paths["cell_embeddings"], out or paths["cache"], TOP_K, {"rule": "test"},
        config_hash="cache1",
    )  # fmt: skip


def test_disk_full_during_a_zarr_write_keeps_the_finished_store(chain, monkeypatch):
    before = snapshot(chain["out"])
    calls = {"n": 0}
    real = zarr.storage.LocalStore.set

    async def full(self, key, value):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)
    with pytest.raises(OSError, match="No space left"):
        rebuild_cache(chain)  # replaces an existing cache
    new_tiles = chain["out"] / "tiles" / "t.zarr"
    calls["n"] = 0
    with pytest.raises(OSError, match="No space left"):
        tiling_step("t", chain["tissue"], new_tiles, chain["out"] / "qc" / "t.png", region_size=2)
    monkeypatch.undo()
    assert snapshot(chain["out"]) == before  # nothing changed, nothing half-written left
    assert not new_tiles.exists()
    assert not list(chain["out"].rglob("*.tmp-*"))
    assert all(p == [] for stores in check_cohort(chain["out"]).values() for p in stores.values())


def test_killed_cache_write_is_listed_by_check_then_repaired(chain, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(chain["out"], out)
    under = {k: v for k, v in chain.items() if k not in ("slide", "out", "encoder")}
    paths = {k: out / v.relative_to(chain["out"]) for k, v in under.items()}
    arg = {k: str(v) for k, v in paths.items()}
    shutil.rmtree(paths["cache"])  # Snakemake removes a job's old output before running it
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import zarr
        real, n = zarr.storage.LocalStore.set, [0]
        async def dying(self, key, value):
            n[0] += 1
            if n[0] == 4:
                os._exit(137)  # SIGKILL-like: no clean-up
            await real(self, key, value)
        zarr.storage.LocalStore.set = dying
        from pathlib import Path
        from test_robustness import rebuild_cache
        rebuild_cache({{k: Path(v) for k, v in {arg!r}.items()}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert not paths["cache"].exists()
    (tmp,) = out.glob("cache/.s.zarr.tmp-*")
    assert hwsi(["check", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"BAD  cache/s: unfinished write: temporary {tmp.name} left by a killed" in text
    assert "ok   tiles/s" in text and "ok   cells/s" in text and "1 bad store(s)" in text
    rebuild_cache(paths)  # the re-run completes and removes the leftover
    assert not tmp.exists()
    assert hwsi(["check", str(out)]) == 0


def test_check_names_each_bad_store_and_stale_ones(chain, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(chain["out"], out)
    assert hwsi(["check", str(out)]) == 0
    text = capsys.readouterr().out
    for kind in ("tiles", "cells", "embeddings", "cell_embeddings", "cache"):
        assert f"ok   {kind}/s" in text
    assert "5 valid, 0 bad store(s)" in text

    # A store whose attributes were never written (a writer killed before its last step).
    meta = out / "cells" / "s.zarr" / "zarr.json"
    data = json.loads(meta.read_text())
    n_cells = data["attributes"]["n_cells"]
    data["attributes"]["n_cells"] = n_cells + 1
    meta.write_text(json.dumps(data))
    emb_meta = out / "embeddings" / "s.zarr" / "zarr.json"
    data = json.loads(emb_meta.read_text())
    data["attributes"] = {}
    emb_meta.write_text(json.dumps(data))
    # An upstream store rebuilt after the cache: the cache is stale.
    tiling_step(
        "s", out / "tissue" / "s", out / "tiles" / "s.zarr", out / "qc.png", region_size=2,
        config_hash="tiles0",
    )  # fmt: skip
    assert hwsi(["check", str(out)]) == 1
    lines = {ln.split(":")[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["ok   tiles/s"]
    assert f"{n_cells} cells stored, attributes say {n_cells + 1}" in lines["BAD  cells/s"]
    assert "not a hwsi.patch_embeddings store (schema None)" in lines["BAD  embeddings/s"]
    assert "stale: made from another version of its tiles store" in lines["BAD  cache/s"]
    assert "stale" in lines["BAD  cell_embeddings/s"]
    results = check_cohort(out)
    assert results["tiles"]["s"] == []
    assert hwsi(["check", str(tmp_path / "empty")]) == 1  # no stores at all is an error


@pytest.mark.workflow
def test_slide_that_disappears_between_runs(tmp_path, make_slide, venv_path_env):
    work = tmp_path / "wf"
    a = make_slide("a", 1024, 1024, mpp=0.5)
    b = make_slide("b", 1024, 1024, mpp=0.5, seed=1)
    write_cohort(work, [f"a,{a},", f"b,{b},"])
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "out"
    finished = snapshot(out / "tiles")
    b.unlink()
    # Finished outputs are kept and nothing re-runs; the plan says which slide is gone.
    proc = snakemake(work, venv_path_env, SUMMARY, "-n")
    assert proc.returncode == 0 and planned_jobs(proc.stdout) == [], proc.stdout
    log = proc.stdout + proc.stderr
    assert f"slide 'b': {b} (sample sheet samples.csv) does not exist" in log
    # What still needs the file leaves the slide out instead of stopping the plan: the
    # manifest plans slide a's extraction only (and lists b in failures.tsv).
    extra = "embed:\n  checkpoint: demo\n  num_workers: 0\ncells:\n  model: 2D_versatile_he\n"
    write_cohort(work, [f"a,{a},", f"b,{b},"], extra_yaml=extra)
    proc = snakemake(work, venv_path_env, "out/manifest.csv", "-n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = planned_jobs(proc.stdout)
    assert {(r, s) for r, s in jobs if s is not None} == {("extract_slide", "a")}
    assert f"slide 'b': {b} (sample sheet samples.csv) does not exist" in proc.stdout + proc.stderr
    # Dropping its row: only the aggregate re-runs, slide a's outputs are untouched.
    write_cohort(work, [f"a,{a},"])
    proc = snakemake(work, venv_path_env, SUMMARY, "--cores", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = snapshot(out / "tiles")
    assert {k: v for k, v in after.items() if k.startswith("a.zarr")} == {
        k: v for k, v in finished.items() if k.startswith("a.zarr")
    }
    assert "b" not in (out / "tiles" / "summary.tsv").read_text().split()


@pytest.mark.parametrize("source", ["synthetic", "CMU-1-Small-Region.svs"])
def test_truncated_slide_is_a_clear_per_slide_error(source, tmp_path, request):
    """A slide cut short (an interrupted copy): the slide's step fails naming it, nothing is
    written. (Corrupt tile data and unopenable files: test_workflow.py.)"""
    from hwsi_model.errors import SlideOpenError
    from hwsi_model.tiling.steps import tissue_step
    from hwsi_model.tiling.tissue import TissueParams

    if source == "synthetic":
        full = write_slide(tmp_path / "full.tiff", size=2048)
    else:
        full = request.getfixturevalue("slides_dir") / source
    cut = tmp_path / f"cut{full.suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])  # a copy in tmp_path, never in the repo
    with pytest.raises(
        SlideOpenError, match=re.escape(f"slide 'cut': OpenSlide cannot open {cut}")
    ):
        tissue_step(cut, "cut", tmp_path / "tissue" / "cut", TissueParams())
    assert not (tmp_path / "tissue").exists() or not any((tmp_path / "tissue").iterdir())
