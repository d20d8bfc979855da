"""Provenance of outputs: the code version, the config hash and the inputs an output was made from.

Every store the workflow writes (tiles, cells, patch and cell embeddings, cache) records the
dict of :func:`describe` in its ``provenance`` attribute, and each trained model folder holds it
as ``provenance.json``::

    {
      "id": "3f1c...",                 # sha256[:16] of everything below: names this exact version
      "code": {"hwsi_version": "0.1.0", "git_commit": "e7cda72...", "git_dirty": false},
      "config_hash": "a1b2c3d4e5f6",   # hash of the parameters the output depends on
      "inputs": {                      # one fingerprint per input (see below)
        "slide": {"kind": "file", "path": ..., "size": 123, "mtime": 1.7e9,
                  "partial_sha256": "..."},
        "tiles": {"kind": "store", "path": ..., "schema": "hwsi.tiles",
                  "provenance_id": "...", "config_hash": "..."},
      },
      "created": "2026-11-28T02:40:00Z"
    }

Input fingerprints are cheap, so that a cohort of large slides is not read twice:

- a **file** (slide, sample sheet, manifest): size in bytes, mtime (s since the epoch) and the
  sha256 of its first and last MiB (``partial_sha256``; the whole file when it is under 2 MiB).
  A slide rewritten in the middle with the same size and mtime is not detected;
- an upstream **store** (a Zarr group written by this package): its own recorded provenance id
  and config hash (reading its attributes only);
- another **folder** (a model folder, the tissue folder): its ``provenance.json`` id when it has
  one, else the sha256 over (relative path, size, partial hash) of its files.

``code`` is computed once per process: the package version and, when the package is imported
from a git checkout, the commit and whether tracked files differ from it (``None`` otherwise;
never an error). The evaluation report names the exact model and cache versions with
:func:`model_fingerprint` and :func:`cache_fingerprint`, or all at once with
:func:`describe_inputs`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
MIB = 1 << 20


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"hwsi_version", "git_commit", "git_dirty"}`` (git fields ``None`` outside a checkout)."""
    import hwsi_model

    info: dict[str, Any] = {"hwsi_version": hwsi_model.__version__}
    # The repository root holds the package; an installed copy (site-packages) has none.
    info.update(git_info(Path(hwsi_model.__file__).resolve().parent.parent))
    return info


def git_info(folder: str | Path) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the git checkout whose root is ``folder`` (``None``
    values when it is none -- a folder inside another project's repository counts as none --
    or git is not installed)."""
    info: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    here = str(folder)
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        lines = commit.stdout.split()
        if commit.returncode != 0 or len(lines) != 2:
            return info
        if Path(lines[0]).resolve() != Path(folder).resolve():
            return info
        status = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):  # no git on PATH, hung repository
        return info
    info["git_commit"] = lines[1]
    if status.returncode == 0:
        info["git_dirty"] = bool(status.stdout.strip())
    return info


def _partial_sha256(path: Path, size: int) -> str:
    """sha256 of the first and last MiB of a file (all of it under 2 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= 2 * MIB:
            h.update(fh.read())
        else:
            h.update(fh.read(MIB))
            fh.seek(size - MIB)
            h.update(fh.read(MIB))
    return h.hexdigest()


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size (bytes), mtime (s) and partial sha256 (first + last MiB) of a file."""
    p = Path(path)
    st = p.stat()
    return {
        "kind": "file",
        "path": str(p),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "partial_sha256": _partial_sha256(p, st.st_size),
    }


def same_fingerprint(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether an input is as it was recorded. A file of at most 2 MiB is hashed whole, so its
    content decides and its mtime does not (Snakemake touches a job's outputs when the job
    ends, also those the job kept as they were); a larger file, hashed only at its two ends,
    must also keep its mtime."""
    if recorded == now:
        return True
    if recorded.get("kind") != "file" or now.get("kind") != "file":
        return False
    same = ("path", "size", "partial_sha256")
    return all(recorded.get(k) == now.get(k) for k in same) and now["size"] <= 2 * MIB


#: Files in a folder that are not its content: Snakemake touches this marker inside a directory
#: output whenever its job runs, also when the job kept the folder as it was.
NOT_CONTENT = frozenset({".snakemake_timestamp"})


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file() and q.name not in NOT_CONTENT):
        size = f.stat().st_size
        h.update(f"{f.relative_to(folder)}\0{size}\0{_partial_sha256(f, size)}\n".encode())
    return h.hexdigest()[:16]


def store_attrs(path: Path) -> dict[str, Any] | None:
    """Root attributes of a Zarr v3 group (from ``zarr.json``), or ``None``."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data.get("attributes", {}) if data.get("node_type") == "group" else None


def input_fingerprint(path: str | Path) -> dict[str, Any]:
    """Fingerprint of one input: a file, a store written by this package, or another folder
    (``{"kind": "missing"}`` when the path does not exist)."""
    p = Path(path)
    if p.is_file():
        return file_fingerprint(p)
    if not p.is_dir():  # recorded, not raised: provenance must never fail a finished step
        log.warning("provenance: input %s does not exist", p)
        return {"kind": "missing", "path": str(p)}
    attrs = store_attrs(p)
    if attrs is not None:
        prov = attrs.get("provenance") or {}
        return {
            "kind": "store",
            "path": str(p),
            "schema": attrs.get("schema"),
            "provenance_id": prov.get("id"),
            "config_hash": attrs.get("config_hash", prov.get("config_hash")),
        }
    own = p / PROVENANCE_FILE
    if own.is_file():
        data = json.loads(own.read_text())
        return {"kind": "folder", "path": str(p), "provenance_id": data.get("id")}
    return {"kind": "folder", "path": str(p), "digest": _folder_digest(p)}


def _digest(data: Mapping[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(
    config_hash: str, inputs: Mapping[str, str | Path | Mapping[str, Any] | None]
) -> dict[str, Any]:
    """The provenance dict of an output (module docstring).

    Args:
        config_hash: hash of the parameters the output depends on (see
            :func:`hwsi_model.workflow_config.config_hash`).
        inputs: name -> input path (fingerprinted with :func:`input_fingerprint`), or an already
            built fingerprint dict; ``None`` entries are left out.
    """
    fingerprints = {
        name: dict(value) if isinstance(value, Mapping) else input_fingerprint(value)
        for name, value in inputs.items()
        if value is not None
    }
    body = {
        "code": code_version(),
        "config_hash": config_hash,
        "inputs": fingerprints,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {"id": _digest(body), **body}


def write_provenance(folder: str | Path, provenance: Mapping[str, Any]) -> Path:
    """Write ``provenance.json`` into ``folder`` (a model folder); return its path."""
    path = Path(folder) / PROVENANCE_FILE
    write_text_atomic(path, json.dumps(dict(provenance), indent=2, default=str) + "\n")
    return path


def model_fingerprint(model_dir: str | Path) -> dict[str, Any]:
    """What names a trained model folder exactly (for the evaluation report).

    Returns ``{"path", "provenance_id", "config_hash", "code", "weights_sha256"}``:
    ``provenance_id``/``config_hash``/``code`` from its ``provenance.json`` (``None`` when the
    folder has none, e.g. made by an older version), and ``weights_sha256`` (16 hex), the
    partial-hash digest of every file in the folder, which changes whenever the weights do.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model folder {d} does not exist")
    prov: dict[str, Any] = {}
    if (d / PROVENANCE_FILE).is_file():
        prov = json.loads((d / PROVENANCE_FILE).read_text())
    files = [q for q in d.rglob("*") if q.is_file() and q.name != PROVENANCE_FILE]
    h = hashlib.sha256()
    for f in sorted(files):
        size = f.stat().st_size
        h.update(f"{f.relative_to(d)}\0{size}\0{_partial_sha256(f, size)}\n".encode())
    return {
        "path": str(d),
        "provenance_id": prov.get("id"),
        "config_hash": prov.get("config_hash"),
        "code": prov.get("code"),
        "weights_sha256": h.hexdigest()[:16],
    }


def cache_fingerprint(cache_path: str | Path) -> dict[str, Any]:
    """What names one slide's cache version exactly (for the evaluation report).

    Returns ``{"path", "slide_id", "provenance_id", "config_hash", "encoder",
    "encoder_checkpoint_hash", "hwsi_version", "git_commit", "complete"}`` read from the store's
    attributes only (no array is read). Raises ``FileNotFoundError`` when it is no Zarr group.
    """
    p = Path(cache_path)
    attrs = store_attrs(p)
    if attrs is None:
        raise FileNotFoundError(f"{p} is not a Zarr store")
    prov = attrs.get("provenance") or {}
    code = prov.get("code") or {}
    return {
        "path": str(p),
        "slide_id": attrs.get("slide_id"),
        "provenance_id": prov.get("id"),
        "config_hash": attrs.get("config_hash"),
        "encoder": attrs.get("encoder"),
        "encoder_checkpoint_hash": attrs.get("encoder_checkpoint_hash"),
        "hwsi_version": attrs.get("hwsi_version"),
        "git_commit": code.get("git_commit"),
        "complete": attrs.get("complete") is True,
    }


def combined_fingerprint(paths: list[str | Path]) -> dict[str, Any]:
    """One fingerprint for many stores (e.g. a cohort's caches): their count and a digest of
    their (path, provenance id) pairs."""
    ids = [(str(p), (store_attrs(Path(p)) or {}).get("provenance", {}).get("id")) for p in paths]
    return {"kind": "stores", "n": len(ids), "digest": _digest({"stores": ids})}


def env_rank() -> int:
    """This process's rank under torchrun/DeepSpeed (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def describe_inputs(
    model_dir: str | Path | None = None,
    caches: list[str | Path] | tuple[str | Path, ...] = (),
    manifest: str | Path | None = None,
) -> dict[str, Any]:
    """What an evaluation report was computed from, for its header.

    Returns ``{"code", "model", "caches", "manifest"}``: this code's version, the
    :func:`model_fingerprint` of ``model_dir``, the :func:`cache_fingerprint` of each cache (in
    the given order; a cache that is no store gets ``{"path", "error"}``) and the manifest's
    :func:`file_fingerprint`; absent arguments give ``None`` / ``[]``.
    """
    fps: list[dict[str, Any]] = []
    for c in caches:
        try:
            fps.append(cache_fingerprint(c))
        except FileNotFoundError as exc:
            fps.append({"path": str(c), "error": str(exc)})
    return {
        "code": code_version(),
        "model": model_fingerprint(model_dir) if model_dir is not None else None,
        "caches": fps,
        "manifest": file_fingerprint(manifest) if manifest is not None else None,
    }
