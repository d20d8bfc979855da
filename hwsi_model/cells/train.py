"""Train a small StarDist2D on ground-truth nucleus masks (the demo cohort's ``nuclei_gt``).

Real StarDist training (``StarDist2D.train`` + threshold optimisation); quality is reported on
tiles of held-out slides with StarDist's own matching (F1/precision/recall at IoU 0.5).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import resize

from hwsi_model.atomic import atomic_output
from hwsi_model.cells.normalize import slide_percentiles
from hwsi_model.cells.stain import blank_glass, remove_hematoxylin
from hwsi_model.errors import HwsiError
from hwsi_model.samples import read_sample_sheet
from hwsi_model.slide.reader import open_slide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """StarDist training settings (small and fast by default: a CPU demo model)."""

    mpp: float = 0.5
    n_rays: int = 32
    grid: int = 2
    unet_n_depth: int = 2
    unet_n_filter_base: int = 16
    patch_size: int = 128
    batch_size: int = 4
    epochs: int = 20
    steps_per_epoch: int = 30
    seed: int = 0
    # Each train/val tile gets a nucleus-free half (its own tissue without haematoxylin, or
    # blank glass) with no labels, so that the model learns that stroma and glass hold no
    # nuclei; test tiles stay as annotated (comparable F1).
    nucleus_free: bool = True


@dataclass
class GTTile:
    slide_id: str
    split: str
    image: np.ndarray  # [H, W, 3] float32, normalised with the slide's percentiles
    labels: np.ndarray  # [H, W] int32 instance ids


def with_nucleus_free_half(rgb: np.ndarray, labels: np.ndarray, k: int):
    """``rgb`` with a nucleus-free copy beside it (``k`` even: the same tissue without its
    haematoxylin, eosin only; odd: blank glass) and ``labels`` with zeros there: ``[H, 2W, 3]
    uint8``, ``[H, 2W] int32``. Side by side rather than alone, so that every tile still holds
    nuclei (StarDist samples most training patches around foreground)."""
    free = remove_hematoxylin(rgb) if k % 2 == 0 else blank_glass(rgb.shape, seed=k)
    return np.concatenate([rgb, free], axis=1), np.concatenate([labels, np.zeros_like(labels)], 1)


def load_gt_tiles(
    index_csv: str | Path, samples_csv: str | Path, mpp: float, nucleus_free: bool = False
) -> list[GTTile]:
    """Read ground-truth tiles and their pixels, rescaled to ``mpp`` um/px; with
    ``nucleus_free`` the tiles of train/val slides get a nucleus-free half
    (:func:`with_nucleus_free_half`).

    ``index_csv`` columns: ``slide_id,x,y,width,height,mpp,label_path`` (level-0 px; label
    paths relative to the sample sheet's folder); slide paths and splits come from ``samples_csv``.
    """
    index_csv = Path(index_csv)
    if not index_csv.is_file():
        raise HwsiError(f"ground-truth index {index_csv} does not exist")
    import tifffile

    samples = read_sample_sheet(samples_csv)
    root = Path(samples_csv).parent
    table = pd.read_csv(index_csv)
    tiles: list[GTTile] = []
    for slide_id, rows in table.groupby("slide_id", sort=True):
        sample = samples[str(slide_id)]
        with open_slide(sample.path, slide_id=str(slide_id), mpp_override=sample.mpp) as reader:
            raw, labels = [], []
            for r in rows.itertuples():
                out_w = round(r.width * reader.mpp / mpp)
                out_h = round(r.height * reader.mpp / mpp)
                raw.append(reader.read_box(r.x, r.y, r.width, r.height, out_w, out_h))
                lab = tifffile.imread(root / r.label_path).astype(np.int32)
                if lab.shape != (out_h, out_w):
                    lab = resize(
                        lab, (out_h, out_w), order=0, preserve_range=True, anti_aliasing=False
                    ).astype(np.int32)
                labels.append(lab)
        pct = slide_percentiles(raw)
        split = sample.split or "train"
        for k, (img, lab) in enumerate(zip(raw, labels, strict=True)):
            if nucleus_free and split != "test":
                img, lab = with_nucleus_free_half(img, lab, k)
            tiles.append(GTTile(str(slide_id), split, pct.apply(img), lab))
    return tiles


def _augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random 90-degree rotations and flips (nuclei have no orientation), and stain jitter.

    Per-channel gain and offset on the normalised image stand in for stain and scanner
    variation, so that a model trained on one cohort's colours does not lock onto them.
    """
    k = np.random.randint(4)
    x, y = np.rot90(x, k, axes=(0, 1)), np.rot90(y, k, axes=(0, 1))
    if np.random.rand() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    gain = np.random.uniform(0.75, 1.25, size=3).astype(np.float32)
    offset = np.random.uniform(-0.15, 0.15, size=3).astype(np.float32)
    x = x * gain + offset
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def evaluate(model, tiles: list[GTTile]) -> dict[str, float]:
    """StarDist matching at IoU 0.5 over ``tiles``: f1, precision, recall, counts."""
    from stardist.matching import matching_dataset

    preds = [model.predict_instances(t.image, show_tile_progress=False)[0] for t in tiles]
    stats = matching_dataset([t.labels for t in tiles], preds, thresh=0.5, show_progress=False)
    return {
        "f1": float(stats.f1),
        "precision": float(stats.precision),
        "recall": float(stats.recall),
        "n_true": int(stats.n_true),
        "n_pred": int(stats.n_pred),
        "n_tiles": len(tiles),
    }


def train_stardist(
    index_csv: str | Path,
    samples_csv: str | Path,
    out_dir: str | Path,
    params: TrainParams = TrainParams(),
    threads: int | None = None,
) -> dict:
    """Train on tiles of train/val slides, validate on val, report on test slides.

    Writes the StarDist model folder at ``out_dir`` (atomically) with ``metrics.json``.
    Returns the metrics.
    """
    from hwsi_model.cells.model_registry import configure_tensorflow

    configure_tensorflow(threads)
    import keras
    import tensorflow as tf
    from stardist.models import Config2D, StarDist2D

    # One line per epoch in logs instead of a redrawn progress bar per step.
    keras.config.disable_interactive_logging()

    # Python's, NumPy's and TensorFlow's generators: Keras 3 draws its initialisers' seeds from
    # Python's ``random`` (tf.random.set_seed alone left two runs with different models).
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()  # same data and seed -> same model
    tiles = load_gt_tiles(index_csv, samples_csv, params.mpp, params.nucleus_free)
    train = [t for t in tiles if t.split == "train"]
    val = [t for t in tiles if t.split == "val"] or train[-max(1, len(train) // 8) :]
    test = [t for t in tiles if t.split == "test"]
    if not train:
        raise HwsiError(f"no ground-truth tiles of training slides in {index_csv}")
    log.info(
        "StarDist training: %d train, %d val, %d test tiles at %.2f um/px",
        len(train),
        len(val),
        len(test),
        params.mpp,
    )
    conf = Config2D(
        n_rays=params.n_rays,
        grid=(params.grid, params.grid),
        n_channel_in=3,
        unet_n_depth=params.unet_n_depth,
        unet_n_filter_base=params.unet_n_filter_base,
        train_patch_size=(params.patch_size, params.patch_size),
        train_batch_size=params.batch_size,
        train_epochs=params.epochs,
        train_steps_per_epoch=params.steps_per_epoch,
        train_tensorboard=False,
        use_gpu=False,
    )
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with atomic_output(out_dir) as tmp:
        model = StarDist2D(conf, name=tmp.name, basedir=str(tmp.parent))
        model.train(
            [t.image for t in train],
            [t.labels for t in train],
            validation_data=([t.image for t in val], [t.labels for t in val]),
            augmenter=_augment,
        )
        model.optimize_thresholds([t.image for t in val], [t.labels for t in val])
        metrics = {
            "held_out": evaluate(model, test) if test else None,
            "validation": evaluate(model, val),
            "thresholds": {
                "prob": float(model.thresholds.prob),
                "nms": float(model.thresholds.nms),
            },
            "train_tiles": len(train),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "params": asdict(params),
            "mpp": params.mpp,
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    held = metrics["held_out"] or metrics["validation"]
    log.info(
        "StarDist demo model: F1 %.3f (P %.3f, R %.3f) at IoU 0.5 on %d held-out tiles",
        held["f1"],
        held["precision"],
        held["recall"],
        held["n_tiles"],
    )
    return metrics
