"""Tissue detection on a low-resolution thumbnail (saturation Otsu + morphology in um)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, filters, measure, morphology

from hwsi_model.atomic import atomic_output
from hwsi_model.errors import StoreError
from hwsi_model.slide.reader import SlideReader

log = logging.getLogger(__name__)

TISSUE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TissueParams:
    """Tissue detection parameters; lengths in um, areas in um^2 (see config schema ``tissue``)."""

    thumbnail_mpp: float = 8.0
    min_saturation: float = 0.07
    blur_um: float = 16.0
    closing_um: float = 32.0
    min_area_um2: float = 20000.0
    min_hole_um2: float = 10000.0

    @classmethod
    def from_config(cls, cfg: dict) -> TissueParams:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: float(v) for k, v in cfg.items() if k in names})


@dataclass
class TissueMask:
    """Binary tissue mask of a slide at ``mpp`` um/px (``mask``: ``[H, W] bool``)."""

    mask: np.ndarray
    mpp: float
    threshold: float
    slide_dimensions: tuple[int, int]
    slide_mpp: float
    meta: dict = field(default_factory=dict)

    @property
    def area_um2(self) -> float:
        return float(self.mask.sum()) * self.mpp**2

    @property
    def n_pieces(self) -> int:
        return int(measure.label(self.mask, connectivity=2).max()) if self.mask.any() else 0


def detect_tissue(thumb: np.ndarray, mpp: float, params: TissueParams) -> tuple[np.ndarray, float]:
    """Segment tissue on an RGB thumbnail.

    Saturation separates stained tissue from white glass and grey background; Otsu adapts to
    the stain, and ``min_saturation`` keeps an empty slide empty (Otsu always splits).

    Args:
        thumb: ``[H, W, 3] uint8`` RGB at ``mpp`` um/px.
        mpp: thumbnail resolution, um/px.
        params: thresholds and morphology sizes in um.

    Returns:
        ``([H, W] bool mask, saturation threshold used)``.
    """
    hsv = color.rgb2hsv(thumb)
    sat, val = hsv[..., 1], hsv[..., 2]
    if params.blur_um > 0:
        sat = filters.gaussian(sat, sigma=params.blur_um / mpp)
    thr = params.min_saturation
    if np.ptp(sat) > 1e-6:
        thr = max(thr, float(filters.threshold_otsu(sat)))
    # Very dark pixels (out-of-scan black, heavy pen) are not tissue.
    mask = (sat > thr) & (val > 0.15)
    radius = round(params.closing_um / mpp)
    if radius >= 1:
        mask = ndi.binary_closing(mask, structure=morphology.disk(radius), border_value=0)
    px_area = mpp * mpp
    hole_px = int(params.min_hole_um2 / px_area)
    if hole_px > 0:
        mask = morphology.remove_small_holes(mask, max_size=hole_px)
    obj_px = int(params.min_area_um2 / px_area)
    if obj_px > 0:
        mask = morphology.remove_small_objects(mask, max_size=obj_px)
    return mask.astype(bool), thr


def tissue_mask_for_slide(
    reader: SlideReader, params: TissueParams
) -> tuple[TissueMask, np.ndarray]:
    """Read the slide's thumbnail at ``params.thumbnail_mpp`` and detect tissue.

    Returns:
        The mask and the thumbnail it was computed on (``[H, W, 3] uint8``).
    """
    thumb = reader.thumbnail_at_mpp(params.thumbnail_mpp)
    # The thumbnail is rounded to whole pixels: its true resolution differs slightly.
    mask_mpp = reader.dimensions[0] * reader.mpp / thumb.shape[1]
    mask, thr = detect_tissue(thumb, mask_mpp, params)
    tm = TissueMask(
        mask=mask,
        mpp=mask_mpp,
        threshold=thr,
        slide_dimensions=reader.dimensions,
        slide_mpp=reader.mpp,
    )
    if not mask.any():
        log.warning("slide '%s': no tissue found (empty mask)", reader.slide_id)
    return tm, thumb


def save_tissue(
    out_dir: str | Path,
    tissue: TissueMask,
    thumb: np.ndarray,
    reader: SlideReader,
    params: TissueParams,
    config_hash: str = "",
) -> None:
    """Write ``mask.png`` (0/255), ``thumbnail.jpg``, ``tissue.json`` to ``out_dir`` atomically."""
    from hwsi_model import __version__
    from hwsi_model.provenance import describe

    meta = {
        "schema": "hwsi.tissue",
        "schema_version": TISSUE_SCHEMA_VERSION,
        "slide_id": reader.slide_id,
        "slide_path": reader.path,
        "slide_dimensions": list(reader.dimensions),
        "slide_mpp": reader.mpp,
        "mpp_source": reader.mpp_info.source,
        "mask_mpp": tissue.mpp,
        "mask_shape": list(tissue.mask.shape),
        "threshold": tissue.threshold,
        "tissue_area_um2": tissue.area_um2,
        "n_pieces": tissue.n_pieces,
        "params": asdict(params),
        "config_hash": config_hash,
        "hwsi_version": __version__,
        "provenance": describe(config_hash, {"slide": reader.path}),
    }
    with atomic_output(out_dir) as tmp:
        tmp.mkdir()
        Image.fromarray(tissue.mask.astype(np.uint8) * 255).save(tmp / "mask.png")
        Image.fromarray(thumb).save(tmp / "thumbnail.jpg", quality=90)
        (tmp / "tissue.json").write_text(json.dumps(meta, indent=2))


def load_tissue(out_dir: str | Path) -> tuple[TissueMask, np.ndarray]:
    """Read what :func:`save_tissue` wrote: the mask and the thumbnail."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "tissue.json"
    if not meta_path.is_file():
        raise StoreError(f"tissue output {out_dir} is incomplete (no tissue.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("schema_version") != TISSUE_SCHEMA_VERSION:
        raise StoreError(
            f"tissue output {out_dir} has schema version {meta.get('schema_version')}, "
            f"expected {TISSUE_SCHEMA_VERSION}; re-run the tissue step"
        )
    mask = np.asarray(Image.open(out_dir / "mask.png")) > 0
    thumb = np.asarray(Image.open(out_dir / "thumbnail.jpg").convert("RGB"))
    tm = TissueMask(
        mask=mask,
        mpp=meta["mask_mpp"],
        threshold=meta["threshold"],
        slide_dimensions=tuple(meta["slide_dimensions"]),
        slide_mpp=meta["slide_mpp"],
        meta=meta,
    )
    return tm, thumb
