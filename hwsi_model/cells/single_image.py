"""Segment an image file or a slide region by hand (``hwsi segment``).

Nuclei come back in the input's own pixel frame (image px, or level-0 px of the slide) so
the GeoJSON overlays the input in QuPath.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from hwsi_model.cells.detect import Nuclei, detect_nuclei
from hwsi_model.cells.export import cell_dataframe, write_csv, write_geojson
from hwsi_model.cells.normalize import image_percentiles
from hwsi_model.errors import HwsiError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _segment_rgb(model, rgb: np.ndarray, mpp_in: float, mpp_model: float, **thresholds) -> Nuclei:
    """Rescale ``rgb`` (at ``mpp_in``) to the model's resolution, detect, map back."""
    h, w = rgb.shape[:2]
    out_w, out_h = max(1, round(w * mpp_in / mpp_model)), max(1, round(h * mpp_in / mpp_model))
    img = (
        rgb
        if (out_w, out_h) == (w, h)
        else np.asarray(Image.fromarray(rgb).resize((out_w, out_h), Image.Resampling.BILINEAR))
    )
    nuc = detect_nuclei(model, img, image_percentiles(img), mpp_model, **thresholds)
    scale = np.array([w / out_w, h / out_h], np.float32)
    return Nuclei(nuc.centroids * scale, nuc.polygons * scale, nuc.features, nuc.rejected)


def load_image(path: str | Path) -> np.ndarray:
    """An RGB image file as ``[H, W, 3] uint8``."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as exc:
        raise HwsiError(f"cannot read image {path}: {exc}") from exc
    return np.asarray(img.convert("RGB"))


def segment_input(
    path: str | Path,
    out_dir: str | Path,
    model,
    mpp_model: float,
    mpp: float | None = None,
    region: tuple[int, int, int, int] | None = None,
    prob_thresh: float | None = None,
    nms_thresh: float | None = None,
    min_hematoxylin: float = 0.03,
) -> Nuclei:
    """Segment an image file (``mpp`` required) or a slide region; write GeoJSON and CSV.

    Args:
        region: ``(x, y, w, h)`` level-0 px of a slide; required for slides (whole-slide
            segmentation is the workflow's ``cells.patches: all`` mode).

    Writes ``out_dir/{stem}_nuclei.geojson`` and ``out_dir/{stem}_nuclei.csv``.
    """
    path = Path(path)
    thresholds = {"prob_thresh": prob_thresh, "nms_thresh": nms_thresh,
                  "min_hematoxylin": min_hematoxylin}  # fmt: skip
    if path.suffix.lower() in IMAGE_SUFFIXES and region is None and mpp is not None:
        rgb = load_image(path)
        nuc = _segment_rgb(model, rgb, mpp, mpp_model, **thresholds)
        frame = "image px"
    else:
        from hwsi_model.slide.reader import open_slide

        if region is None:
            raise HwsiError(
                f"{path}: give --region x,y,w,h (level-0 px) for a slide, or --mpp for an image"
            )
        x, y, w, h = region
        with open_slide(path, mpp_override=mpp) as reader:
            rgb = reader.read_box(x, y, w, h, w, h)
            nuc = _segment_rgb(model, rgb, reader.mpp, mpp_model, **thresholds)
        offset = np.array([x, y], np.float32)
        nuc = Nuclei(nuc.centroids + offset, nuc.polygons + offset, nuc.features, nuc.rejected)
        frame = "level-0 px"
    out_dir = Path(out_dir)
    write_geojson(out_dir / f"{path.stem}_nuclei.geojson", nuc.polygons, nuc.features)
    write_csv(out_dir / f"{path.stem}_nuclei.csv", cell_dataframe(nuc.centroids, nuc.features))
    areas = nuc.features[:, 0]
    log.info(
        "%s: %d nuclei (%s; %d pale detections dropped); area um^2 median %.1f, 10-90%% %.1f-%.1f",
        path.name,
        len(nuc),
        frame,
        nuc.rejected,
        *(np.percentile(areas, [50, 10, 90]) if len(nuc) else (0, 0, 0)),
    )
    return nuc
