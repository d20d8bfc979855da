"""Write outputs under a temporary name and rename them into place when complete.

A killed job therefore never leaves something at the final path: Snakemake and the next step
only ever see complete outputs. Leftover temporaries (``.NAME.tmp-*``) of a killed run are
removed by the next write of the same output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Delete temporaries left next to ``final`` by killed runs; return what was removed."""
    final = Path(final)
    removed = []
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("removed %d stale temporary output(s) of %s", len(removed), final.name)
    return removed


def _discard(tmp: Path) -> None:
    """Delete a failed temporary output. A writer's background tasks (Zarr writes chunks
    concurrently) may still be creating files in it for a moment after the first error (e.g.
    ENOSPC): remove again until it stays gone (about 1.5 s at most)."""
    for attempt in range(6):
        with contextlib.suppress(OSError):
            _remove(tmp)
        time.sleep(0.025 * 2**attempt)
        if not (tmp.exists() or tmp.is_symlink()):
            return
    log.warning("could not remove the temporary output %s", tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path (file or directory) that becomes ``final`` on success.

    On an exception the temporary is deleted and ``final`` is left as it was. An existing
    ``final`` is replaced only after the new output is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary output of {final}")
        if final.exists() or final.is_symlink():
            old = _tmp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        _discard(tmp)
        raise


def write_text_atomic(final: str | Path, text: str) -> None:
    """Write a text file through :func:`atomic_output`."""
    with atomic_output(final) as tmp:
        tmp.write_text(text)
