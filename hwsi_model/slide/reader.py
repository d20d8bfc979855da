"""Read whole-slide images at a target resolution (um/px) through OpenSlide.

All coordinates are level-0 pixels. Resolution comes from, in order: the sample sheet's
``mpp`` (an explicit override), the file's ``openslide.mpp-x/y`` properties. A resolution that
is a placeholder (72 or 96 dpi written by image editors, i.e. hundreds of um/px) counts as
missing. Without one, :class:`MissingMppError` names the slide and the fix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from hwsi_model.errors import MissingMppError, SlideOpenError, SlideReadError
from hwsi_model.slide.tiff_direct import TiffLevels

log = logging.getLogger(__name__)

# Plausible microscope resolutions; outside this range a resolution tag is a placeholder.
MPP_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class MppInfo:
    """Level-0 resolution of a slide (um/px) and where it came from."""

    mpp_x: float
    mpp_y: float
    source: str

    @property
    def mpp(self) -> float:
        """Mean of x and y resolution, um/px."""
        return (self.mpp_x + self.mpp_y) / 2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def resolve_mpp(
    properties: dict[str, str], slide_id: str, path: str, override: float | None = None
) -> MppInfo:
    """Resolve the level-0 resolution of a slide.

    Args:
        properties: OpenSlide properties of the slide.
        slide_id: used in error messages.
        path: used in error messages.
        override: um/px from the sample sheet; wins over the file when given.

    Raises:
        MissingMppError: neither source gives a plausible resolution.
    """
    if override is not None:
        if not (override > 0 and math.isfinite(override)):
            raise MissingMppError(f"slide '{slide_id}': sample sheet mpp {override!r} is not > 0")
        return MppInfo(float(override), float(override), "sample_sheet")
    raw_x = properties.get(openslide.PROPERTY_NAME_MPP_X)
    raw_y = properties.get(openslide.PROPERTY_NAME_MPP_Y, raw_x)
    reason = "the file has no resolution (no openslide.mpp-x property)"
    if raw_x is not None:
        try:
            mx, my = float(raw_x), float(raw_y)
        except (TypeError, ValueError):
            mx = my = float("nan")
        if MPP_RANGE[0] <= mx <= MPP_RANGE[1] and MPP_RANGE[0] <= my <= MPP_RANGE[1]:
            if abs(mx - my) / max(mx, my) > 0.01:
                log.warning("slide '%s': anisotropic pixels (%.4f x %.4f um/px)", slide_id, mx, my)
            return MppInfo(mx, my, "openslide.mpp-x/y")
        reason = (
            f"the file's resolution ({raw_x} um/px) is a placeholder, not a microscope "
            "resolution (e.g. 72 dpi written by an image editor)"
        )
    raise MissingMppError(
        f"slide '{slide_id}' ({path}): {reason}; add an 'mpp' column to the sample sheet "
        "with this scan's um/px (e.g. 0.25 for 40x, 0.5 for 20x)"
    )


class SlideReader:
    """An open slide with micrometre-aware reads.

    Args:
        path: slide file (any format OpenSlide reads: SVS, tiled TIFF, NDPI, MRXS, DICOM, ...;
            or a flat TIFF, PNG or JPEG, read by :mod:`hwsi_model.slide.plain_image`).
        slide_id: name used in messages (default: file stem).
        mpp_override: level-0 um/px from the sample sheet, overriding the file.
        direct_decode: decode TIFF/SVS tiles directly where that is pixel-identical to
            OpenSlide (about twice as fast); ``False`` reads everything through OpenSlide.

    Raises:
        SlideOpenError: the file is missing or OpenSlide refuses it.
        MissingMppError: no resolution is known.
    """

    def __init__(
        self,
        path: str | Path,
        slide_id: str | None = None,
        mpp_override: float | None = None,
        direct_decode: bool = True,
    ) -> None:
        self.path = str(path)
        self.slide_id = slide_id or Path(path).stem
        self._slide = _open_any(self.path, self.slide_id)
        self.properties: dict[str, str] = dict(self._slide.properties)
        try:
            self.mpp_info = resolve_mpp(self.properties, self.slide_id, self.path, mpp_override)
        except MissingMppError:
            self._slide.close()
            raise
        self._direct = (
            TiffLevels.open(self.path, self.vendor, self.level_dimensions, self.level_downsamples)
            if direct_decode
            else None
        )

    # -- metadata -------------------------------------------------------------------------
    @property
    def vendor(self) -> str:
        return self.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown")

    @property
    def mpp(self) -> float:
        """Level-0 resolution, um/px."""
        return self.mpp_info.mpp

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self._slide.dimensions

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._slide.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._slide.level_downsamples

    def info(self) -> dict[str, object]:
        """Summary for ``hwsi info``: vendor, levels, dimensions, mpp and its source."""
        return _summary(self.slide_id, self.path, self._slide, self.properties, self.mpp_info)

    # -- pixel access -----------------------------------------------------------------------
    def best_level(self, downsample: float) -> int:
        """Coarsest level whose downsample does not exceed ``downsample`` (never upsample)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = i
        return best

    def read_box(self, x: int, y: int, w0: int, h0: int, out_w: int, out_h: int) -> np.ndarray:
        """Read a level-0 box and return it resized to ``(out_w, out_h)``.

        Args:
            x, y: top-left corner, level-0 px.
            w0, h0: box size, level-0 px.
            out_w, out_h: output size, px.

        Returns:
            ``[out_h, out_w, 3] uint8`` RGB; areas outside the scanned image are white.

        Raises:
            SlideReadError: the pixel data cannot be decoded.
        """
        downsample = min(w0 / out_w, h0 / out_h)
        level = self.best_level(downsample)
        ds = self.level_downsamples[level]
        lw, lh = max(1, round(w0 / ds)), max(1, round(h0 / ds))
        if lw * lh > self.max_read_px and out_h > 1 and (lw, lh) != (out_w, out_h):
            # No coarser level (a flat image): read in bands, so memory stays bounded.
            return self._read_box_in_bands(x, y, w0, h0, out_w, out_h, lw * lh)
        try:
            rgb = self._read_rgb(int(x), int(y), level, lw, lh)
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideReadError(
                f"slide '{self.slide_id}': cannot read pixel data at ({x}, {y}) level {level}: "
                f"{_one_line(exc)} (corrupt or truncated file?)"
            ) from exc
        if (lw, lh) != (out_w, out_h):
            img = Image.fromarray(rgb)
            k = lw // out_w
            if k >= 2 and lw == k * out_w and lh == k * out_h:
                img = img.reduce(k)  # exact integer factor: box filter, much faster than resize
            else:
                img = img.resize((out_w, out_h), Image.Resampling.BILINEAR)
            rgb = np.asarray(img)
        return rgb

    #: Largest box (level px) read in one piece; larger downsampled reads go band by band.
    max_read_px = 64 * 1024 * 1024

    def _read_box_in_bands(
        self, x: int, y: int, w0: int, h0: int, out_w: int, out_h: int, level_px: int
    ) -> np.ndarray:
        """``read_box`` as bands of output rows, each read below :attr:`max_read_px`
        (``level_px``: pixels of the whole box at the level it is read from)."""
        rows = max(1, int(out_h * self.max_read_px / level_px))
        bands = []
        for o0 in range(0, out_h, rows):
            o1 = min(out_h, o0 + rows)
            y0, y1 = round(o0 * h0 / out_h), round(o1 * h0 / out_h)
            bands.append(self.read_box(x, y + y0, w0, max(1, y1 - y0), out_w, o1 - o0))
        return np.concatenate(bands, axis=0)

    def _read_rgb(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """``[h, w, 3] uint8`` RGB of a level's region, composited on white.

        Served by direct tile decoding where that reproduces OpenSlide exactly (see
        :mod:`hwsi_model.slide.tiff_direct`), else by OpenSlide.
        """
        if self._direct is not None:
            try:
                out = self._direct.read(x, y, level, w, h)
            except Exception as exc:  # decoder errors mean corrupt data
                raise SlideReadError(
                    f"slide '{self.slide_id}': cannot read pixel data at ({x}, {y}) level {level}: "
                    f"{_one_line(exc)} (corrupt or truncated file?)"
                ) from exc
            if out is not None:
                return out
        return _rgba_to_rgb_on_white(np.asarray(self._slide.read_region((x, y), level, (w, h))))

    def read_region_at_mpp(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        """Read ``width x height`` px at ``mpp`` um/px, starting at level-0 ``(x, y)``.

        Returns:
            ``[height, width, 3] uint8`` RGB.
        """
        scale = mpp / self.mpp
        return self.read_box(x, y, round(width * scale), round(height * scale), width, height)

    def thumbnail_at_mpp(self, mpp: float) -> np.ndarray:
        """Whole slide at ``mpp`` um/px (e.g. 8 um/px for tissue detection).

        Returns:
            ``[H, W, 3] uint8`` with ``W = round(width0 * slide_mpp / mpp)``.
        """
        w, h = self.dimensions
        scale = self.mpp / mpp
        return self.read_box(0, 0, w, h, max(1, round(w * scale)), max(1, round(h * scale)))

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self._slide.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # An OpenSlide handle must not cross process boundaries: open one per worker.
        raise TypeError("SlideReader is not picklable; open one per worker process")


def _rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's RGBA onto white: ``[H, W, 4] -> [H, W, 3] uint8``."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _summary(
    slide_id: str,
    path: str,
    slide,
    properties: dict[str, str],
    mpp: MppInfo | None,
    mpp_problem: str | None = None,
) -> dict[str, object]:
    w, h = slide.dimensions
    known = mpp is not None
    return {
        "slide_id": slide_id,
        "path": path,
        "format": openslide.OpenSlide.detect_format(path)
        or f"plain image ({properties.get('hwsi.reader')})",
        "vendor": properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
        "dimensions": [w, h],
        "mpp": round(mpp.mpp, 6) if known else None,
        "mpp_x": mpp.mpp_x if known else None,
        "mpp_y": mpp.mpp_y if known else None,
        "mpp_source": mpp.source if known else None,
        "mpp_problem": mpp_problem,
        "size_um": [round(w * mpp.mpp_x, 1), round(h * mpp.mpp_y, 1)] if known else None,
        "objective_power": properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        "levels": [
            {"level": i, "dimensions": list(d), "downsample": round(ds, 4)}
            for i, (d, ds) in enumerate(
                zip(slide.level_dimensions, slide.level_downsamples, strict=True)
            )
        ],
        "properties": dict(sorted(properties.items())),
    }


def _open_any(path: str, slide_id: str):
    """An ``openslide.OpenSlide``, or for a file it refuses that an image reader opens (flat
    TIFF, PNG, JPEG) a :class:`~hwsi_model.slide.plain_image.PlainImage`."""
    if Path(path).is_dir():
        raise SlideOpenError(f"slide '{slide_id}': {path} is a folder, not a slide file")
    if not Path(path).is_file():
        raise SlideOpenError(f"slide '{slide_id}': file not found: {path}")
    try:
        return openslide.OpenSlide(path)
    except (openslide.OpenSlideError, OSError) as exc:
        refused = exc
    from hwsi_model.slide.plain_image import PlainImage

    try:
        return PlainImage(path)
    except ValueError as exc:
        raise SlideOpenError(
            f"slide '{slide_id}': OpenSlide cannot open {path}: {_one_line(refused)}; "
            f"as a plain image: {_one_line(exc)}"
        ) from None


def describe_slide(path: str | Path, mpp_override: float | None = None) -> dict[str, object]:
    """What a file holds (``hwsi info``): format, vendor, dimensions, levels, properties and its
    resolution, or, when the file has none, ``mpp: None`` and ``mpp_problem`` saying what to add.
    Unlike :class:`SlideReader` a missing resolution is not an error here: finding it out is
    what the command is for.

    Raises:
        SlideOpenError: the file is missing or OpenSlide refuses it.
    """
    path = str(path)
    slide_id = Path(path).stem
    slide = _open_any(path, slide_id)
    try:
        properties = dict(slide.properties)
        try:
            mpp, problem = resolve_mpp(properties, slide_id, path, mpp_override), None
        except MissingMppError as exc:
            mpp, problem = None, str(exc)
        return _summary(slide_id, path, slide, properties, mpp, problem)
    finally:
        slide.close()


def open_slide(
    path: str | Path,
    slide_id: str | None = None,
    mpp_override: float | None = None,
    direct_decode: bool = True,
) -> SlideReader:
    """Open a slide (see :class:`SlideReader`)."""
    return SlideReader(path, slide_id, mpp_override, direct_decode)
