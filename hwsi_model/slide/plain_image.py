"""Images OpenSlide refuses but an image reader opens: stripped (untiled) TIFFs, PNG, JPEG.

:class:`PlainImage` offers the part of ``openslide.OpenSlide`` that
:class:`~hwsi_model.slide.reader.SlideReader` uses (one level, ``read_region`` as RGBA with
transparent pixels outside the image, ``properties``), so tiles and patches of such a file are
those of the same pixels in a pyramid. TIFFs are read window by window through tifffile's Zarr
view (only the strips or tiles a read touches are decoded, so a large stripped TIFF never sits
in memory whole); PNG and JPEG are decoded once by Pillow (these formats cannot be read in
windows). A resolution comes from TIFF resolution tags in centimetres or inches when present
(placeholders such as 72 dpi are then refused by the reader's plausibility check); otherwise
the sample sheet's ``mpp`` column must give it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VENDOR = "plain-image"
# Little/big-endian TIFF and BigTIFF.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _rgba(window: np.ndarray) -> np.ndarray:
    """``[h, w]``, ``[h, w, 3]`` or ``[h, w, 4]`` uint8 -> ``[h, w, 4]`` uint8."""
    if window.ndim == 2:
        window = np.repeat(window[..., None], 3, axis=2)
    if window.shape[2] == 3:
        alpha = np.full((*window.shape[:2], 1), 255, np.uint8)
        window = np.concatenate([window, alpha], axis=2)
    return np.ascontiguousarray(window[..., :4])


class PlainImage:
    """One-level image with OpenSlide's reading interface (see the module docstring).

    Raises:
        ValueError: the file is not an 8-bit grey, RGB or RGBA image either reader opens.
    """

    level_count = 1
    level_downsamples = (1.0,)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._tif = None
        self.properties: dict[str, str] = {"openslide.vendor": VENDOR}
        with open(self.path, "rb") as f:
            is_tiff = f.read(4) in _TIFF_MAGIC
        if is_tiff:
            try:
                self._open_tiff()
            except ValueError:
                raise
            except Exception as exc:  # no pages, broken structure: not readable as an image
                self.close()
                raise ValueError(f"{self.path}: tifffile cannot read it ({exc})") from None
        else:
            self._open_pillow()
        if self._array.dtype != np.uint8:
            self.close()
            raise ValueError(f"{self.path}: {self._array.dtype} pixels; only 8-bit images read")
        h, w = self._array.shape[:2]
        self.dimensions = (int(w), int(h))
        self.level_dimensions = (self.dimensions,)

    def _open_tiff(self) -> None:
        import tifffile
        import zarr

        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # a TIFF header but no readable structure
            raise ValueError(f"{self.path}: tifffile cannot read it ({exc})") from None
        page = self._tif.pages[0]
        if page.is_tiled:  # a tiled TIFF that OpenSlide refuses is corrupt, not a flat image
            self.close()
            raise ValueError(f"{self.path}: a tiled TIFF (a pyramid OpenSlide should read)")
        shape = page.shape
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE or len(shape) not in (2, 3):
            raise ValueError(f"{self.path}: planar or multi-sample TIFF layout {shape} not read")
        self._array = zarr.open(page.aszarr(), mode="r")
        try:  # decode one pixel now: an unknown codec or corrupt data fails at open, not later
            np.asarray(self._array[:1, :1])
        except Exception as exc:
            self.close()
            raise ValueError(f"{self.path}: cannot decode its pixels ({exc})") from None
        self.properties["hwsi.reader"] = "tifffile"
        self.properties["tiff.ImageWidth"], self.properties["tiff.ImageLength"] = (
            str(shape[1]),
            str(shape[0]),
        )
        self._resolution_from_tags(page)

    def _resolution_from_tags(self, page) -> None:
        tags = page.tags
        unit = tags.get("ResolutionUnit")
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        if unit is None or xres is None:
            return
        per = {2: 25400.0, 3: 10000.0}.get(int(unit.value))  # um per inch, per cm
        if per is None:
            return

        def mpp(tag) -> float:
            num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
            return per * den / num if num else float("nan")

        self.properties["openslide.mpp-x"] = repr(mpp(xres))
        self.properties["openslide.mpp-y"] = repr(mpp(yres if yres is not None else xres))

    def _open_pillow(self) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as im:
                mode = "RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"
                self._array = np.asarray(im.convert(mode))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{self.path}: not an image Pillow reads ({exc})") from None
        self.properties["hwsi.reader"] = "pillow"

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        """``[h, w, 4] uint8`` RGBA of ``size`` at level-0 ``location``; transparent outside."""
        if level != 0:
            raise ValueError("a plain image has one level")
        (x, y), (w, h) = location, size
        out = np.zeros((h, w, 4), np.uint8)
        W, H = self.dimensions
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            try:
                window = np.asarray(self._array[y0:y1, x0:x1])
            except Exception as exc:  # decoder errors: corrupt or truncated data
                raise OSError(f"cannot decode {self.path}: {exc}") from exc
            out[y0 - y : y1 - y, x0 - x : x1 - x] = _rgba(window)
        return out

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None
