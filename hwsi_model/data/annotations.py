"""Region annotations of slides as raster masks (e.g. where the lesion is), for measuring evidence.

An annotation set is a CSV index with one row per slide::

    slide_id,mask,um_per_px,label
    S01,masks/S01_lesion.png,2.0,lesion

``mask`` is a single-channel 8-bit image (PNG or TIFF; path relative to the index) covering the
slide from its level-0 origin, non-zero inside the annotated region; ``um_per_px`` is its
resolution in micrometres per mask pixel, so a mask is independent of the scanner's level-0
resolution. A QuPath or ASAP polygon export becomes such a mask by rasterising it at any
resolution. The demo generator writes its lesions in this format.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsi_model.atomic import atomic_output

COLUMNS = ("slide_id", "mask", "um_per_px", "label")


class AnnotationError(ValueError):
    """An annotation index or mask that cannot be used (names the file and the problem)."""


@dataclass(frozen=True)
class MaskAnnotation:
    """One slide's annotated region: ``path`` (a mask image), its ``um_per_px``, its label."""

    slide_id: str
    path: Path
    um_per_px: float
    label: str

    def load(self) -> np.ndarray:
        """The mask, ``[H, W] bool`` (True inside the region)."""
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                arr = np.asarray(im)
        except (OSError, ValueError) as exc:
            raise AnnotationError(f"{self.path}: cannot read the mask ({exc})") from None
        if arr.ndim == 3:
            arr = arr[..., 0]
        return arr > 0

    def fraction_inside(
        self, coords: np.ndarray, patch_size0: float, slide_mpp: float, samples: int = 8
    ) -> np.ndarray:
        """``[N] float`` fraction of each patch inside the region.

        Args:
            coords: ``[N, 2]`` patch top-left corners (x, y) in level-0 pixels.
            patch_size0: patch side in level-0 pixels.
            slide_mpp: the slide's level-0 resolution (um/px).
            samples: ``samples x samples`` points per patch (at the centres of a regular grid).

        Points outside the mask count as outside the region.
        """
        mask = self.load()
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        t = (np.arange(samples) + 0.5) / samples * float(patch_size0)
        gx = (coords[:, 0:1] + t[None, :])[:, None, :]  # [N, 1, s]
        gy = (coords[:, 1:2] + t[None, :])[:, :, None]  # [N, s, 1]
        gx, gy = np.broadcast_arrays(gx, gy)
        scale = float(slide_mpp) / self.um_per_px  # level-0 px -> mask px
        col = np.floor(gx * scale).astype(np.int64)
        row = np.floor(gy * scale).astype(np.int64)
        ok = (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
        inside = np.zeros(row.shape, dtype=bool)
        inside[ok] = mask[row[ok], col[ok]]
        return inside.reshape(len(coords), -1).mean(1)


def read_annotations(index: str | Path) -> dict[str, MaskAnnotation]:
    """slide id -> its annotation, from an index CSV (see the module docstring).

    Raises:
        AnnotationError: a missing column, a duplicate slide, a non-positive resolution or a
            mask file that does not exist (named with the row).
    """
    index = Path(index)
    try:
        with index.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise AnnotationError(f"{index}: missing column(s) {missing}; need {COLUMNS}")
            rows = list(reader)
    except FileNotFoundError:
        raise AnnotationError(f"annotation index {index} does not exist") from None
    out: dict[str, MaskAnnotation] = {}
    for n, row in enumerate(rows, start=2):
        sid = row["slide_id"].strip()
        where = f"{index}, line {n}"
        if sid in out:
            raise AnnotationError(f"{where}: slide {sid!r} is annotated twice")
        try:
            um = float(row["um_per_px"])
        except ValueError:
            um = float("nan")
        if not um > 0:
            raise AnnotationError(f"{where}: um_per_px must be a positive number")
        path = (index.parent / row["mask"]).resolve()
        if not path.is_file():
            raise AnnotationError(f"{where}: mask {path} does not exist")
        out[sid] = MaskAnnotation(sid, path, um, row["label"].strip() or "region")
    return out


def write_annotations(index: str | Path, annotations: list[MaskAnnotation]) -> Path:
    """Write the index CSV (mask paths relative to it) atomically; the masks must exist."""
    index = Path(index)
    with atomic_output(index) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for a in annotations:
            rel = Path(a.path).resolve().relative_to(index.parent.resolve())
            w.writerow([a.slide_id, rel.as_posix(), repr(float(a.um_per_px)), a.label])
    return index


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write ``[H, W] bool`` as an 8-bit PNG (255 inside), atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    return path
