"""Resolve a StarDist model by pretrained name or by folder, offline-first.

A name such as ``2D_versatile_he`` is looked up in StarDist's own cache (Keras' cache folder,
``$KERAS_HOME`` or ``~/.keras``, under ``models/StarDist2D/<name>/``). Without network access a
missing model fails at once with where to put it, instead of hanging on a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

from hwsi_model.errors import HwsiError

log = logging.getLogger(__name__)

PRETRAINED = ("2D_versatile_he", "2D_versatile_fluo", "2D_paper_dsb2018", "2D_demo")


class ModelNotFoundError(HwsiError):
    """The StarDist model is neither a folder nor in StarDist's cache."""


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def configure_tensorflow(threads: int | None = None) -> None:
    """CPU thread counts and GPU memory growth (TF must not grab all GPU memory)."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(max(1, int(threads) // 2))
        except RuntimeError:  # already initialised in this process
            pass
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("weights_*.h5"))


def model_hash(folder: Path) -> str:
    """sha256 (first 16 hex) over the model's config, thresholds and weights."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".h5")):
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def resolve_model_folder(spec: str, allow_download: bool = False) -> Path:
    """Folder of the StarDist model ``spec`` (a folder path or a pretrained name).

    Raises:
        ModelNotFoundError: with the cache folder to fill or the option to set.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not is_model_folder(path):
            raise ModelNotFoundError(
                f"StarDist model folder {path} has no config.json and weights_*.h5"
            )
        return path
    if spec not in PRETRAINED:
        raise ModelNotFoundError(
            f"StarDist model '{spec}' is neither a folder nor a pretrained name "
            f"({', '.join(PRETRAINED)})"
        )
    cache = keras_cache_dir() / "models" / "StarDist2D" / spec
    for candidate in (cache / spec, cache / f"{spec}_extracted", cache):
        if candidate.is_dir() and is_model_folder(candidate):
            return candidate
    if not allow_download:
        raise ModelNotFoundError(
            f"StarDist pretrained model '{spec}' is not in StarDist's cache ({cache}). "
            f'On a machine with internet run `python -c "from stardist.models import StarDist2D; '
            f"StarDist2D.from_pretrained('{spec}')\"` and copy {cache} here (or set KERAS_HOME), "
            "or set cells.model to a model folder, or set cells.allow_download: true"
        )
    from stardist.models import StarDist2D

    model = StarDist2D.from_pretrained(spec)
    return Path(model.logdir)


def load_stardist(spec: str, allow_download: bool = False, threads: int | None = None):
    """Load a ``StarDist2D`` model (see :func:`resolve_model_folder`); returns (model, folder)."""
    folder = resolve_model_folder(spec, allow_download)
    configure_tensorflow(threads)
    from stardist.models import StarDist2D

    model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
    log.info(
        "StarDist model %s (prob_thresh %.3f, nms_thresh %.3f)",
        folder,
        model.thresholds.prob,
        model.thresholds.nms,
    )
    return model, folder
