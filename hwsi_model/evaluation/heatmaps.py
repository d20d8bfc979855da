"""Evidence heatmaps: relevance painted over the slide thumbnail and over the top patches.

Inputs are what a slide's cache holds (:func:`hwsi_model.data.stores.cache.read_cache`):
``patch_coords [N, 2]`` (top-left x, y in level-0 px), ``patch_region [N]``, ``selected
[R, K]`` (-1 = padding), ``cell_offsets [M + 1]`` and ``cell_pos [C, 2]`` (nucleus centroid
in its patch, 0..1), attribute ``patch_size_level0`` (patch side in level-0 px); and the
scores of an :class:`hwsi_model.model.evidence.Evidence` (or plain arrays): ``region [R]``,
``patch [N]``, ``cell [C]``.

- :func:`render_evidence` writes ``region.png`` (each patch painted with its region's
  score), ``patch.png`` (each patch's own score) and ``top_patches.png`` (the k selected
  patches with the highest patch score, nucleus outlines coloured by per-cell score; outlines
  come from the cells store when given, else circles at the cached centroids).
- Coordinates: thumbnail px = level-0 px x ``scale`` (:func:`slide_thumbnail`).
- :func:`hot_overlap` measures how the hot patches overlap a ground-truth patch mask (from a
  region annotation, :mod:`hwsi_model.data.annotations`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hwsi_model.atomic import atomic_output
from hwsi_model.errors import MissingMppError
from hwsi_model.slide.reader import SlideReader

log = logging.getLogger(__name__)

DEFAULT_CMAP = "inferno"


def _np(x: Any) -> np.ndarray:
    """A numpy copy of an array or tensor (float tensors of any dtype, on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _open(slide_path: str | Path, mpp_override: float | None) -> SlideReader:
    try:
        return SlideReader(slide_path, mpp_override=mpp_override)
    except MissingMppError:  # pictures need no resolution
        return SlideReader(slide_path, mpp_override=1.0)


# -- thumbnail and score maps -----------------------------------------------------------------


def slide_thumbnail(
    slide_path: str | Path, max_px: int = 1024, mpp_override: float | None = None
) -> tuple[np.ndarray, float]:
    """The whole slide with its longer side ``max_px`` (never upscaled).

    Returns:
        ``([H, W, 3] uint8, scale)`` with ``scale`` = thumbnail px per level-0 px.
    """
    with _open(slide_path, mpp_override) as reader:
        w, h = reader.dimensions
        scale = min(1.0, max_px / max(w, h))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        return reader.read_box(0, 0, w, h, tw, th), tw / w


def patch_score_map(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size0: float,
    scale: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Paint each patch's score over its footprint: ``[H, W] float32``, NaN = no patch.

    Args:
        scores: ``[N]`` one value per patch.
        coords: ``[N, 2]`` patch top-left (x, y), level-0 px.
        patch_size0: patch side, level-0 px.
        scale: thumbnail px per level-0 px.
        shape: ``(H, W)`` of the thumbnail.
    """
    scores, coords = _np(scores).astype(np.float32), _np(coords)
    if scores.shape != (len(coords),):
        raise ValueError(f"{scores.shape[0]} scores for {len(coords)} patches")
    out = np.full(shape, np.nan, dtype=np.float32)
    x0 = np.floor(coords[:, 0] * scale).astype(np.int64)
    y0 = np.floor(coords[:, 1] * scale).astype(np.int64)
    x1 = np.maximum(np.ceil((coords[:, 0] + patch_size0) * scale).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.ceil((coords[:, 1] + patch_size0) * scale).astype(np.int64), y0 + 1)
    for i in np.argsort(scores, kind="stable"):  # higher scores win shared border pixels
        out[max(y0[i], 0) : y1[i], max(x0[i], 0) : x1[i]] = scores[i]
    return out


def overlay(
    thumb: np.ndarray,
    score_map: np.ndarray,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend a colour-mapped score map onto the thumbnail where it is finite.

    Scores are scaled to 0..1 by ``vrange`` (default: min and max of the finite scores).
    Returns ``[H, W, 3] uint8``.
    """
    import matplotlib

    finite = np.isfinite(score_map)
    out = thumb.astype(np.float32).copy()
    if not finite.any():
        return thumb.copy()
    lo, hi = vrange or (float(score_map[finite].min()), float(score_map[finite].max()))
    norm = np.clip((score_map[finite] - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    rgb = matplotlib.colormaps[cmap](norm)[:, :3] * 255.0
    out[finite] = (1 - alpha) * out[finite] + alpha * rgb
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _title(img: Image.Image, text: str) -> None:
    if text:
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, 0, 8 + 6 * len(text), 14], fill=(255, 255, 255))
        draw.text((4, 2), text, fill=(0, 0, 0))


def _legend(img: Image.Image, lo: float, hi: float, cmap: str) -> None:
    """A colour bar with the score range in the bottom-left corner."""
    import matplotlib

    w = min(120, img.width // 2)
    if w < 20 or img.height < 40:
        return
    bar = (matplotlib.colormaps[cmap](np.linspace(0, 1, w))[:, :3] * 255).astype(np.uint8)
    y = img.height - 26
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, y - 2, w + 8, img.height], fill=(255, 255, 255))
    img.paste(Image.fromarray(np.repeat(bar[None], 10, axis=0)), (4, y))
    draw.text((4, y + 11), f"{lo:.2f}", fill=(0, 0, 0))
    draw.text((w - 26, y + 11), f"{hi:.2f}", fill=(0, 0, 0))


def render_heatmap(
    thumb: np.ndarray,
    scale: float,
    coords: np.ndarray,
    patch_size0: float,
    scores: np.ndarray,
    out_png: str | Path,
    title: str = "",
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    legend: bool = True,
) -> Path:
    """Write the per-patch ``scores`` over ``thumb`` as a PNG of the thumbnail's size, with a
    title (top left) and a colour bar of the score range (bottom left) unless ``legend`` is
    false."""
    smap = patch_score_map(scores, coords, patch_size0, scale, thumb.shape[:2])
    img = Image.fromarray(overlay(thumb, smap, cmap, alpha))
    _title(img, title)
    finite = smap[np.isfinite(smap)]
    if legend and finite.size:
        _legend(img, float(finite.min()), float(finite.max()), cmap)
    return _save_png(img, out_png)


# -- top patches with nuclei ------------------------------------------------------------------


def selected_rows(selected: np.ndarray) -> np.ndarray:
    """``[M]`` selected patch rows in cache order (region by region, -1 skipped)."""
    sel = _np(selected).astype(np.int64).ravel()
    return sel[sel >= 0]


def cell_polygons(cells_store: str | Path, rows: np.ndarray) -> list[np.ndarray]:
    """Nucleus outlines ``[n_m, R, 2]`` (x, y level-0 px) of each selected patch ``rows[m]``
    from the cells store, in the cache's cell order (the store's order within a patch)."""
    from hwsi_model.data.stores.cells import read_cells

    table, _ = read_cells(cells_store)
    pos = np.searchsorted(table.patches, rows)
    out = []
    for r, p in zip(rows, pos, strict=True):
        if p >= len(table.patches) or table.patches[p] != r:
            out.append(np.zeros((0, 1, 2), np.float32))
            continue
        out.append(table.polygons[table.patch_offsets[p] : table.patch_offsets[p + 1]])
    return out


def render_top_patches(
    slide_path: str | Path,
    coords: np.ndarray,
    patch_size0: float,
    patch_scores: np.ndarray,
    selected: np.ndarray,
    cell_offsets: np.ndarray,
    cell_scores: np.ndarray | None,
    cell_pos: np.ndarray,
    out_png: str | Path,
    k: int = 6,
    crop_px: int = 256,
    polygons: Sequence[np.ndarray] | None = None,
    cmap: str = DEFAULT_CMAP,
    mpp_override: float | None = None,
) -> tuple[Path, list[int]]:
    """The ``k`` selected patches with the highest patch score, side by side, each with its
    nuclei outlined in the colour of their per-cell score (one colour scale for all cells).

    Args:
        selected: ``[R, K]`` cache ``selected`` (cells exist for selected patches only).
        cell_offsets: ``[M + 1]`` cells of selected patch m.
        cell_scores: ``[C]`` per-cell relevance (``None``: outlines in green).
        cell_pos: ``[C, 2]`` centroids in the patch, 0..1 (circles when no ``polygons``).
        polygons: per selected patch ``[n_m, R, 2]`` level-0 outlines (:func:`cell_polygons`).

    Returns:
        (PNG path, the patch rows shown). The PNG is ``k' * crop_px`` x ``crop_px`` px with
        ``k' = min(k, M)`` (one blank panel when nothing is selected).
    """
    import matplotlib

    rows = selected_rows(selected)
    offsets = _np(cell_offsets).astype(np.int64)
    pscores = _np(patch_scores).astype(np.float32)
    cscores = None if cell_scores is None else _np(cell_scores).astype(np.float32)
    pos = _np(cell_pos).astype(np.float32)
    order = np.argsort(-pscores[rows], kind="stable")[:k] if len(rows) else np.zeros(0, int)
    colour = matplotlib.colormaps[cmap]
    if cscores is not None and len(cscores):
        lo, hi = float(cscores.min()), float(cscores.max())
    else:
        lo, hi = 0.0, 1.0
    panels = []
    with _open(slide_path, mpp_override) as reader:
        for m in order:
            r = int(rows[m])
            x, y = (int(v) for v in _np(coords)[r])
            ps0 = round(patch_size0)
            img = Image.fromarray(reader.read_box(x, y, ps0, ps0, crop_px, crop_px))
            draw = ImageDraw.Draw(img)
            s = crop_px / patch_size0
            for c in range(offsets[m], offsets[m + 1]):
                if cscores is None:
                    col = (0, 230, 0)
                else:
                    v = (cscores[c] - lo) / (hi - lo) if hi > lo else 1.0
                    col = tuple(int(255 * t + 0.5) for t in colour(float(v))[:3])
                if polygons is not None and len(polygons[m]) == offsets[m + 1] - offsets[m]:
                    poly = polygons[m][c - offsets[m]]
                    pts = [((px - x) * s, (py - y) * s) for px, py in poly]
                    draw.polygon(pts, outline=col, width=2)
                else:
                    cx, cy = pos[c] * crop_px
                    rad = max(3.0, crop_px / 40)
                    draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], outline=col, width=2)
            draw.rectangle([0, 0, 150, 14], fill=(255, 255, 255))
            draw.text((3, 2), f"patch {r}: {pscores[r]:.3f}", fill=(0, 0, 0))
            panels.append(img)
    if not panels:
        panels = [Image.new("RGB", (crop_px, crop_px), (255, 255, 255))]
        ImageDraw.Draw(panels[0]).text((5, 5), "no selected patches", fill=(0, 0, 0))
    out = Image.new("RGB", (crop_px * len(panels), crop_px), (255, 255, 255))
    for i, p in enumerate(panels):
        out.paste(p, (i * crop_px, 0))
    return _save_png(out, out_png), [int(rows[m]) for m in order]


# -- everything for one answer ----------------------------------------------------------------


def evidence_arrays(evidence: Any) -> dict[str, np.ndarray]:
    """``{"region", "patch", "cell"}`` numpy arrays from an ``Evidence`` or a mapping."""
    get = evidence.get if isinstance(evidence, Mapping) else lambda k: getattr(evidence, k, None)
    out = {}
    for k in ("region", "patch", "cell"):
        v = get(k)
        if v is not None:
            out[k] = _np(v).astype(np.float32).ravel()
    if "patch" not in out:
        raise ValueError("evidence needs per-patch scores")
    return out


def render_evidence(
    slide_path: str | Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    evidence: Any,
    out_dir: str | Path,
    prefix: str = "",
    top_k: int = 6,
    cells_store: str | Path | None = None,
    max_px: int = 1024,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    mpp_override: float | None = None,
    legend: bool = True,
) -> dict[str, Path]:
    """Write the evidence pictures of one answer under ``out_dir``.

    Args:
        slide_path: the slide file (OpenSlide-readable).
        arrays, attrs: the slide's cache (:func:`hwsi_model.data.stores.cache.read_cache`).
        evidence: :class:`hwsi_model.model.evidence.Evidence` or a mapping of arrays
            ``region [R]``, ``patch [N]``, ``cell [C]`` (region and cell optional).
        prefix: file-name prefix (e.g. the question id and ``_``).
        cells_store: the slide's ``cells/{slide}.zarr`` for real nucleus outlines.
        legend: draw the colour bar on the heatmaps.

    Returns:
        ``{"region": path, "patch": path, "top_patches": path}`` for the pictures written.
    """
    ev = evidence_arrays(evidence)
    out_dir = Path(out_dir)
    coords = _np(arrays["patch_coords"])
    ps0 = float(attrs["patch_size_level0"])
    thumb, scale = slide_thumbnail(slide_path, max_px, mpp_override)
    paths: dict[str, Path] = {}
    if "region" in ev:
        per_patch = ev["region"][_np(arrays["patch_region"]).astype(np.int64)]
        paths["region"] = render_heatmap(
            thumb, scale, coords, ps0, per_patch, out_dir / f"{prefix}region.png",
            "region relevance", cmap, alpha, legend,
        )  # fmt: skip
    paths["patch"] = render_heatmap(
        thumb, scale, coords, ps0, ev["patch"], out_dir / f"{prefix}patch.png",
        "patch relevance", cmap, alpha, legend,
    )  # fmt: skip
    rows = selected_rows(arrays["selected"])
    polys = cell_polygons(cells_store, rows) if cells_store else None
    paths["top_patches"], _ = render_top_patches(
        slide_path, coords, ps0, ev["patch"], arrays["selected"], arrays["cell_offsets"],
        ev.get("cell"), arrays["cell_pos"], out_dir / f"{prefix}top_patches.png", top_k,
        polygons=polys, cmap=cmap, mpp_override=mpp_override,
    )  # fmt: skip
    return paths


# -- overlap with a ground truth --------------------------------------------------------------


def hot_overlap(
    scores: np.ndarray, in_lesion: np.ndarray, top_fraction: float = 0.1
) -> dict[str, float | int | None]:
    """How the hottest patches overlap the ground truth.

    Args:
        scores: ``[N]`` patch relevance.
        in_lesion: ``[N]`` bool, patch inside the ground-truth area.
        top_fraction: share of patches counted as hot (at least one patch).

    Returns:
        ``{"top_in_lesion"``: fraction of the hot patches inside the lesion,
        ``"lesion_rate"``: fraction of all patches inside (what random scores would give),
        ``"enrichment"``: their ratio, ``"auroc"``: of the scores against membership
        (``None`` when one class is empty), ``"n_patches"``, ``"n_top"``}.
    """
    from sklearn.metrics import roc_auc_score

    s, y = _np(scores).astype(np.float64), _np(in_lesion).astype(bool)
    if s.shape != y.shape or s.ndim != 1 or not len(s):
        raise ValueError("need one score and one membership flag per patch")
    n_top = max(1, round(top_fraction * len(s)))
    top = np.argsort(-s, kind="stable")[:n_top]
    rate = float(y.mean())
    top_in = float(y[top].mean())
    return {
        "top_in_lesion": top_in,
        "lesion_rate": rate,
        "enrichment": top_in / rate if rate > 0 else None,
        "auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None,
        "n_patches": len(s),
        "n_top": n_top,
    }
