"""Render one synthetic H&E-like slide and its nucleus instance labels.

All geometry is defined in micrometres (um) and converted to level-0 pixels with the
slide's resolution ``mpp`` (um/px), so a 0.25 um/px slide has twice the pixel size of a
0.5 um/px slide of the same physical size. Pixel coordinates use pixel centres: pixel
``(row, col)`` covers ``[(row) * mpp, (row + 1) * mpp)`` um, its centre is
``(row + 0.5) * mpp`` um.

Colour follows a Beer-Lambert stain model: per-pixel haematoxylin and eosin optical
densities are mixed with stain vectors and exponentiated against a bright background.

Low-frequency structure (tissue pieces, lesion compartment, fibre orientation) lives on a
coarse grid of ``COARSE_UM`` um cells and is bilinearly upsampled band by band, which keeps
peak memory near one byte per level-0 pixel per full-resolution map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

SLIDE_CLASSES: tuple[str, ...] = ("benign", "low_grade", "high_grade")

# Compartment codes of the level-0 ``code`` map (uint8).
BACKGROUND, STROMA, LESION_STROMA, EPITHELIUM, LUMEN = 0, 1, 2, 3, 4
LESION_CODES = (LESION_STROMA, EPITHELIUM, LUMEN)
# Nucleus types in the nucleus table.
NUC_EPITHELIAL, NUC_STROMAL, NUC_LYMPHOCYTE = 1, 2, 3

COARSE_UM = 4.0  # cell size of the low-frequency grids
BAND_ROWS = 512  # rows rendered at a time
NUCLEUS_GAP_UM = 0.5  # free margin kept around every nucleus so instances never touch
_SHEET_TRIES = 8  # random positions tried per nucleus of a solid sheet

# Stain optical-density vectors (R, G, B); eosin tuned towards a pink rather than magenta.
_H_VEC = np.array([0.60, 0.75, 0.30], dtype=np.float32)
_E_VEC = np.array([0.10, 0.80, 0.40], dtype=np.float32)


@dataclass(frozen=True)
class NucleusStyle:
    """Lesion (epithelial/tumour) nucleus appearance of one class; sizes in um."""

    diameter_um: tuple[float, float]  # mean, sd of the equivalent diameter
    diameter_clip_um: tuple[float, float]
    aspect: tuple[float, float]  # uniform range of major/minor axis ratio
    stain: tuple[float, float]  # mean, sd of haematoxylin optical density
    chromatin: float  # relative amplitude of the chromatin texture
    chromatin_word: str
    nucleoli: float  # fraction of nuclei drawn with a prominent nucleolus


@dataclass(frozen=True)
class ClassStyle:
    """Architecture and nucleus parameters of one slide class; lengths in um."""

    # Range of the planned fraction of tissue area; the classes overlap on purpose (extent is
    # a fact to read from the slide, not a function of the class).
    lesion_fraction: tuple[float, float]
    nucleus: NucleusStyle
    architecture: str  # "glands" or "sheets"
    lumen_um: tuple[float, float] = (0.0, 0.0)  # mean lumen semi-axis range
    lumen_aspect: tuple[float, float] = (1.0, 1.0)
    ring_um: tuple[float, float] = (0.0, 0.0)  # epithelial ring thickness range
    gland_gap_um: tuple[float, float] = (0.0, 0.0)  # min stroma between glands
    spacing_extra_um: tuple[float, float] = (0.0, 0.0)  # nucleus spacing beyond diameter
    second_layer: float = 0.0  # probability of a stratified (second-layer) nucleus
    jitter_um: float = 0.0
    angle_jitter: float = 0.0  # rad
    sheet_density: float = 0.0  # target nuclei per 0.01 mm2 (sheets)
    cytoplasm_h: float = 0.08  # haematoxylin OD of the epithelial cytoplasm


CLASS_STYLES: dict[str, ClassStyle] = {
    "benign": ClassStyle(
        lesion_fraction=(0.12, 0.62),
        nucleus=NucleusStyle((6.5, 0.35), (5.6, 7.4), (1.0, 1.15), (0.95, 0.05), 0.10, "fine", 0.0),
        architecture="glands",
        lumen_um=(14.0, 24.0),
        lumen_aspect=(1.0, 1.4),
        ring_um=(10.0, 12.0),
        gland_gap_um=(45.0, 90.0),
        spacing_extra_um=(3.0, 5.0),
        jitter_um=0.3,
        angle_jitter=0.08,
    ),
    "low_grade": ClassStyle(
        lesion_fraction=(0.20, 0.72),
        nucleus=NucleusStyle(
            (8.6, 0.6), (7.4, 10.0), (1.15, 1.6), (1.10, 0.07), 0.22, "slightly coarse", 0.0
        ),
        architecture="glands",
        lumen_um=(8.0, 15.0),
        lumen_aspect=(1.0, 1.6),
        ring_um=(18.0, 22.0),
        gland_gap_um=(2.0, 6.0),
        spacing_extra_um=(0.3, 1.0),
        second_layer=0.75,
        jitter_um=0.8,
        angle_jitter=0.25,
    ),
    "high_grade": ClassStyle(
        lesion_fraction=(0.28, 0.80),
        nucleus=NucleusStyle(
            (11.5, 2.3), (8.0, 18.0), (1.05, 2.0), (1.40, 0.15), 0.38, "coarse", 0.5
        ),
        architecture="sheets",
        sheet_density=30.0,
        cytoplasm_h=0.15,
    ),
}

# Stromal (spindle) nuclei: full length and width in um, density per 0.01 mm2.
SPINDLE_LENGTH_UM = (8.0, 13.0)
SPINDLE_WIDTH_UM = (2.4, 3.4)
SPINDLE_DENSITY = {STROMA: (3.0, 5.0), LESION_STROMA: (5.0, 8.0)}
# Inflammatory focus: small round dark lymphocytes packed in a disc of stroma.
LYMPHOCYTE_DIAMETER_UM = (4.5, 6.0)
LYMPHOCYTE_DENSITY = 110.0  # target nuclei per 0.01 mm2 inside the focus
FOCUS_RADIUS_UM = (45.0, 70.0)
FOCUS_MIN_RADIUS_UM = 25.0


@dataclass(frozen=True)
class SlideSpec:
    """Physical description of one slide and the facts planned for it.

    ``mpp`` in um/px, sizes in um (integers). The planned facts vary within a class, so a
    model must read the slide to answer about them (the measured facts of the render are the
    ground truth; a plan is only a target): ``n_pieces`` tissue pieces (1-3);
    ``lesion_fraction`` of the tissue area; ``lesion_side`` ("left"/"right"), the half of the
    tissue the lesion grows from; ``nucleus_diameter_um``, the mean equivalent diameter of the
    lesional nuclei (None: the class default); ``focus`` ("upper"/"lower"), the half of the
    tissue holding a focus of inflammation, or None for none.
    """

    slide_id: str
    label: str
    mpp: float
    width_um: int
    height_um: int
    n_pieces: int = 1
    lesion_fraction: float = 0.3
    lesion_side: str = "left"
    nucleus_diameter_um: float | None = None
    focus: str | None = None

    @property
    def width_px(self) -> int:
        """Level-0 width in px."""
        return round(self.width_um / self.mpp)

    @property
    def height_px(self) -> int:
        """Level-0 height in px."""
        return round(self.height_um / self.mpp)


@dataclass
class SlideRender:
    """Rendered slide.

    rgb: (H, W, 3) uint8 level-0 image. labels: (H, W) int32 nucleus instance ids
    (0 = none, ids 1..n index ``nuclei`` rows + 1). code: (H, W) uint8 compartment map
    (see module constants). nuclei: dict of 1-D arrays of length n (centre ``cy``/``cx``
    in level-0 px, ``type``, semi-axes ``a_um``/``b_um``, ``angle`` rad, ``layer``,
    ``nucleolus``). glands: list of (cy_um, cx_um, lumen_a_um, lumen_b_um, outer_um).
    focus: the inflammatory focus's disc (centre and radius in um), None without one.
    """

    spec: SlideSpec
    rgb: np.ndarray
    labels: np.ndarray
    code: np.ndarray
    nuclei: dict[str, np.ndarray]
    n_pieces: int
    glands: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    focus: tuple[float, float, float] | None = None  # (cy_um, cx_um, radius_um) or None


# ----------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean, unit sd; float32 ``shape``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)


def _grid_rows(
    grid: np.ndarray, cell_um: float, mpp: float, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """Bilinearly sample a grid at the level-0 pixel centres of ``rows`` x ``cols`` (half-open).

    ``grid`` cell ``(i, j)`` is centred at ``((i + 0.5) * cell_um, (j + 0.5) * cell_um)`` um.
    Returns float32 array (rows[1] - rows[0], cols[1] - cols[0]).
    """

    def axis(n0: int, n1: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n0, n1) + 0.5) * (mpp / cell_um) - 0.5
        lo = np.floor(pos).astype(np.int64)
        w = (pos - lo).astype(np.float32)
        return np.clip(lo, 0, size - 1), np.clip(lo + 1, 0, size - 1), w

    y0, y1, wy = axis(*rows, grid.shape[0])
    x0, x1, wx = axis(*cols, grid.shape[1])
    rows = grid[y0] * (1 - wy)[:, None] + grid[y1] * wy[:, None]  # (nr, grid_w), cheap
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _value_noise(rng: np.random.Generator, spec: SlideSpec, cell_um: float) -> np.ndarray:
    """Unit-sd white noise on a grid of ``cell_um`` cells covering the slide (float32)."""
    shape = (math.ceil(spec.height_um / cell_um) + 1, math.ceil(spec.width_um / cell_um) + 1)
    return rng.standard_normal(shape).astype(np.float32)


def ellipse_pixels(
    cy: float,
    cx: float,
    a: float,
    b: float,
    angle: float,
    shape: tuple[int, int],
    margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of an ellipse and of the same ellipse grown by ``margin``.

    Centre ``(cy, cx)``, semi-axes ``a`` (major) and ``b`` and ``margin`` are in level-0 px;
    ``angle`` (rad) is the major-axis direction measured from +x (columns) towards +y (rows).
    Returns ``(rows, cols, inner)``: int64 coordinates of the grown ellipse clipped to
    ``shape`` and a bool array marking which of them lie in the ellipse itself.
    """
    reach = max(a, b) + margin
    r0, r1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, shape[0])
    c0, c1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    yy = np.arange(r0, r1, dtype=np.float64)[:, None] - cy
    xx = np.arange(c0, c1, dtype=np.float64)[None, :] - cx
    ca, sa = math.cos(angle), math.sin(angle)
    u2 = (xx * ca + yy * sa) ** 2
    v2 = (yy * ca - xx * sa) ** 2
    outer = u2 / (a + margin) ** 2 + v2 / (b + margin) ** 2 <= 1.0
    rows, cols = np.nonzero(outer)
    inner = (u2 / a**2 + v2 / b**2 <= 1.0)[rows, cols]
    return rows + r0, cols + c0, inner


def _sample_in_codes(
    code: np.ndarray, codes: tuple[int, ...], n: int, rng: np.random.Generator, stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` roughly uniform level-0 px positions (float cy, cx) inside ``codes``.

    Uses a strided grid to keep the index array small; points are jittered inside their
    stride cell and may fall just outside the compartment (callers re-check footprints).
    """
    sub = np.isin(code[::stride, ::stride], codes)
    flat = np.flatnonzero(sub)
    if flat.size == 0 or n <= 0:
        return np.zeros(0), np.zeros(0)
    pick = flat[rng.integers(0, flat.size, n)]
    cy = (pick // sub.shape[1]) * stride + rng.uniform(0, stride, n)
    cx = (pick % sub.shape[1]) * stride + rng.uniform(0, stride, n)
    return np.minimum(cy, code.shape[0] - 1), np.minimum(cx, code.shape[1] - 1)


class _NucleusCanvas:
    """Accumulates non-overlapping nucleus ellipses into a level-0 label image."""

    def __init__(self, code: np.ndarray, mpp: float) -> None:
        self.code = code
        self.mpp = mpp
        self.labels = np.zeros(code.shape, dtype=np.int32)
        self.rows: list[tuple[float, float, int, float, float, float, int, bool]] = []
        self.margin_px = NUCLEUS_GAP_UM / mpp

    def try_place(
        self,
        cy: float,
        cx: float,
        a_um: float,
        b_um: float,
        angle: float,
        allowed: np.ndarray,
        ntype: int,
        layer: int = 0,
        nucleolus: bool = False,
    ) -> bool:
        """Draw the nucleus if its grown footprint is free and inside ``allowed`` codes.

        ``allowed`` is a bool lookup over compartment codes. Returns True when placed.
        """
        rows, cols, inner = ellipse_pixels(
            cy, cx, a_um / self.mpp, b_um / self.mpp, angle, self.labels.shape, self.margin_px
        )
        if not inner.any() or self.labels[rows, cols].any():
            return False
        if not allowed[self.code[rows, cols]].all():
            return False
        self.labels[rows[inner], cols[inner]] = len(self.rows) + 1
        self.rows.append((cy, cx, ntype, a_um, b_um, angle, layer, nucleolus))
        return True

    def table(self) -> dict[str, np.ndarray]:
        """Nucleus table as dict of 1-D arrays (row i describes label i + 1)."""
        cols = list(zip(*self.rows, strict=True)) if self.rows else [[] for _ in range(8)]
        names = ("cy", "cx", "type", "a_um", "b_um", "angle", "layer", "nucleolus")
        dtypes = (float, float, np.int8, float, float, float, np.int8, bool)
        return {n: np.asarray(c, dtype=d) for n, c, d in zip(names, cols, dtypes, strict=True)}


def _allowed(*codes: int) -> np.ndarray:
    lut = np.zeros(5, dtype=bool)
    lut[list(codes)] = True
    return lut


# ----------------------------------------------------------------------------- geometry


def _coarse_centres(spec: SlideSpec) -> tuple[np.ndarray, np.ndarray]:
    """Coarse-grid cell centres in um: (gh, 1) y and (1, gw) x arrays."""
    gh, gw = math.ceil(spec.height_um / COARSE_UM), math.ceil(spec.width_um / COARSE_UM)
    yc = ((np.arange(gh) + 0.5) * COARSE_UM)[:, None]
    xc = ((np.arange(gw) + 0.5) * COARSE_UM)[None, :]
    return yc, xc


def tissue_field(spec: SlideSpec, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Coarse signed tissue field (>0 inside tissue) with ``spec.n_pieces`` separate pieces.

    Each piece is an ellipse with a smooth harmonic perturbation of its radius, placed in
    its own slot along the slide's long axis; the slot margins guarantee the pieces never
    touch. Returns (float32 (gh, gw) field, number of pieces).
    """
    yc, xc = _coarse_centres(spec)
    n = int(spec.n_pieces)
    horizontal = spec.width_um >= spec.height_um
    long_len, short_len = (
        (spec.width_um, spec.height_um) if horizontal else (spec.height_um, spec.width_um)
    )
    slot = long_len / n
    out = np.full((yc.shape[0], xc.shape[1]), -1.0, dtype=np.float32)
    for i in range(n):
        c_long = (i + 0.5 + rng.uniform(-0.02, 0.02)) * slot
        c_short = short_len * (0.5 + rng.uniform(-0.02, 0.02))
        r_long, r_short = slot * rng.uniform(0.32, 0.38), short_len * rng.uniform(0.35, 0.42)
        cy, cx, ry, rx = (
            (c_short, c_long, r_short, r_long) if horizontal else (c_long, c_short, r_long, r_short)
        )
        dy, dx = (yc - cy) / ry, (xc - cx) / rx
        rho, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
        ks = np.arange(2, 10)
        amp = rng.uniform(0.2, 1.0, ks.size) / ks**1.2
        # Total |perturbation| <= 12 % of the radius: with the radii and jitter above the
        # pieces reach at most 0.47 slot / 0.49 short side, so they never touch.
        amp *= rng.uniform(0.07, 0.12) / amp.sum()
        phase = rng.uniform(0, 2 * np.pi, ks.size)
        radius = 1.0 + sum(
            a * np.cos(k * theta + p) for a, k, p in zip(amp, ks, phase, strict=True)
        )
        out = np.maximum(out, (1.0 - rho / radius).astype(np.float32))
    return out, n


def lesion_field(
    spec: SlideSpec, tissue: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Coarse signed lesion field (>0 in lesion) covering ``fraction`` of the tissue.

    Tissue is divided into blocks of 250-500 um; blocks near a lesion centre score higher.
    The centre is a random tissue point in the outer quarter of the tissue's bounding box on
    ``spec.lesion_side``, so the lesion grows from that side. The block scores are smoothed,
    roughened with noise, and thresholded at the tissue quantile that yields the requested
    fraction. Returns float32 (gh, gw).
    """
    yc, xc = _coarse_centres(spec)
    block = rng.uniform(250.0, 500.0)
    inside = tissue > 0
    cols = np.flatnonzero(inside.any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    quarter = max((c1 - c0) // 4, 1)
    side = np.zeros_like(inside)
    if spec.lesion_side == "left":
        side[:, c0 : c0 + quarter] = True
    elif spec.lesion_side == "right":
        side[:, c1 - quarter : c1] = True
    else:
        raise ValueError(f"lesion_side must be 'left' or 'right', got {spec.lesion_side!r}")
    ti = np.flatnonzero(inside & side)
    if ti.size == 0:
        ti = np.flatnonzero(inside)
    pick = ti[rng.integers(0, ti.size)]
    cy, cx = yc[pick // inside.shape[1], 0], xc[0, pick % inside.shape[1]]
    by, bx = (yc // block + 0.5) * block, (xc // block + 0.5) * block  # block centres
    # The last coarse centre lies up to COARSE_UM / 2 past the slide's edge and can fall in one
    # block more; the grid covers it (same size as before where it did not: same draws).
    nby = int(max(spec.height_um, yc[-1, 0]) // block) + 1
    nbx = int(max(spec.width_um, xc[0, -1]) // block) + 1
    jitter = rng.normal(0.0, 0.35, (nby, nbx)).astype(np.float32)
    score = (
        -np.hypot(by - cy, bx - cx) / block
        + jitter[(yc // block).astype(int), (xc // block).astype(int)]
    )
    score = ndimage.gaussian_filter(score.astype(np.float32), block / 3.0 / COARSE_UM)
    score += 0.35 * _smooth_noise(rng, score.shape, 40.0 / COARSE_UM)
    # A weak continuous pull towards the centre keeps the lesion compact on small slides.
    score -= (0.3 / block) * np.hypot(yc - cy, xc - cx).astype(np.float32)
    threshold = np.quantile(score[inside], 1.0 - fraction)
    return (score - threshold).astype(np.float32)


def build_code_map(
    spec: SlideSpec, tissue: np.ndarray, lesion: np.ndarray, lesion_code: int
) -> np.ndarray:
    """Level-0 compartment map (H, W) uint8 from the coarse tissue and lesion fields."""
    h, w = spec.height_px, spec.width_px
    code = np.zeros((h, w), dtype=np.uint8)
    for r0 in range(0, h, BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, h)
        t = _grid_rows(tissue, COARSE_UM, spec.mpp, (r0, r1), (0, w)) > 0
        les = _grid_rows(lesion, COARSE_UM, spec.mpp, (r0, r1), (0, w)) > 0
        band = code[r0:r1]
        band[t] = STROMA
        band[t & les] = lesion_code
    return code


def place_glands(
    spec: SlideSpec,
    style: ClassStyle,
    tissue: np.ndarray,
    lesion: np.ndarray,
    rng: np.random.Generator,
) -> list[tuple[float, float, float, float, float, float]]:
    """Random sequential placement of gland outlines inside the lesion (um units).

    A gland is a lumen ellipse (semi-axes ``la`` >= ``lb``, orientation ``psi``) with an
    epithelial ring of thickness ``ring``. Glands keep ``gland_gap_um`` of stroma between
    them, stay fully inside the tissue and have their centre well inside the lesion.
    Returns tuples (cy, cx, la, lb, psi, ring) in um / rad.
    """
    cell = COARSE_UM
    t_dist = ndimage.distance_transform_edt(tissue > 0) * cell
    l_mask = (lesion > 0) & (tissue > 0)
    l_dist = ndimage.distance_transform_edt(l_mask) * cell
    cand = np.flatnonzero(l_mask)
    if cand.size == 0:
        return []
    gw = l_mask.shape[1]
    area = cand.size * cell * cell
    mean_outer = np.mean(style.lumen_um) + np.mean(style.ring_um)
    n_try = int(40 * area / (math.pi * mean_outer**2)) + 50
    glands: list[tuple[float, float, float, float, float, float]] = []
    centres = np.zeros((0, 3))  # cy, cx, outer radius (um)
    for _ in range(n_try):
        idx = cand[rng.integers(0, cand.size)]
        iy, ix = divmod(int(idx), gw)
        cy, cx = (iy + rng.uniform()) * cell, (ix + rng.uniform()) * cell
        lm, asp = rng.uniform(*style.lumen_um), rng.uniform(*style.lumen_aspect)
        la, lb = lm * math.sqrt(asp), lm / math.sqrt(asp)
        ring = rng.uniform(*style.ring_um)
        outer = la + ring
        gap = rng.uniform(*style.gland_gap_um)
        if t_dist[iy, ix] < outer + 2 * cell or l_dist[iy, ix] < 0.6 * outer:
            continue
        if centres.size:
            d = np.hypot(centres[:, 0] - cy, centres[:, 1] - cx)
            if np.any(d < centres[:, 2] + outer + gap):
                continue
        glands.append((cy, cx, la, lb, rng.uniform(0, math.pi), ring))
        centres = np.vstack([centres, [cy, cx, outer]])
    if not glands:
        # Tiny lesion: shrink one gland to fit at the deepest lesion point.
        iy, ix = np.unravel_index(int(np.argmax(l_dist)), l_dist.shape)
        room = min(l_dist[iy, ix], t_dist[iy, ix] - cell)
        ring = min(style.ring_um[0], 0.45 * room)
        la = max(room - ring, 3.0)
        glands.append(((iy + 0.5) * cell, (ix + 0.5) * cell, la, la, 0.0, ring))
    return glands


def paint_glands(code: np.ndarray, glands: list, mpp: float) -> None:
    """Paint gland rings (EPITHELIUM) and lumens (LUMEN) into tissue pixels of ``code``."""
    for cy, cx, la, lb, psi, ring in glands:
        py, px = cy / mpp - 0.5, cx / mpp - 0.5
        rows, cols, _ = ellipse_pixels(
            py, px, (la + ring) / mpp, (lb + ring) / mpp, psi, code.shape
        )
        keep = code[rows, cols] != BACKGROUND
        code[rows[keep], cols[keep]] = EPITHELIUM
        rows, cols, _ = ellipse_pixels(py, px, la / mpp, lb / mpp, psi, code.shape)
        code[rows, cols] = LUMEN


# ----------------------------------------------------------------------------- nuclei


def _lesion_nucleus_shape(
    style: NucleusStyle, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (a, b) in um of ``n`` lesion nuclei; area follows the diameter draw."""
    d = np.clip(rng.normal(*style.diameter_um, n), *style.diameter_clip_um)
    asp = rng.uniform(*style.aspect, n)
    return d / 2 * np.sqrt(asp), d / 2 / np.sqrt(asp)


def place_gland_nuclei(
    canvas: _NucleusCanvas, glands: list, style: ClassStyle, rng: np.random.Generator
) -> None:
    """Line each gland lumen with epithelial nuclei, major axis radial (columnar).

    Nuclei sit on the ellipse concentric with the lumen; with ``second_layer`` some get a
    partner further out (stratification). Spacing along the ring is diameter + extra.
    """
    ns = style.nucleus
    allowed = _allowed(LESION_STROMA, EPITHELIUM)
    mpp = canvas.mpp
    for cy, cx, la, lb, psi, ring in glands:
        d_mean = ns.diameter_um[0]
        spacing = d_mean + rng.uniform(*style.spacing_extra_um)
        n = max(int(2 * math.pi * (0.5 * (la + lb) + 0.5 * d_mean) // spacing), 3)
        t0 = (np.arange(n) + rng.uniform()) * (2 * math.pi / n)
        for layer in (0, 1) if style.second_layer > 0 else (0,):
            t = t0 + (math.pi / n if layer else 0.0) + rng.normal(0, 0.15 / n, n)
            keep = rng.uniform(size=n) < (style.second_layer if layer else 1.0)
            a_um, b_um = _lesion_nucleus_shape(ns, rng, n)
            for ti, k, a, b in zip(t, keep, a_um, b_um, strict=True):
                if not k:
                    continue
                # Basal layer touches the lumen (radial major axis), the second layer sits
                # against the outer edge of the ring; one layer only: centred in the ring.
                if style.second_layer == 0:
                    offset = 0.5 * ring
                else:
                    offset = a + 1.2 if layer == 0 else ring - a - 0.7
                ea, eb = la + offset, lb + offset
                lx, ly = ea * math.cos(ti), eb * math.sin(ti)
                nx, ny = eb * math.cos(ti), ea * math.sin(ti)  # outward normal (local)
                cp, sp = math.cos(psi), math.sin(psi)
                ux = cx + lx * cp - ly * sp + rng.normal(0, style.jitter_um)
                uy = cy + lx * sp + ly * cp + rng.normal(0, style.jitter_um)
                ang = psi + math.atan2(ny, nx) + rng.normal(0, style.angle_jitter)
                canvas.try_place(
                    uy / mpp - 0.5,
                    ux / mpp - 0.5,
                    a,
                    b,
                    ang,
                    allowed,
                    NUC_EPITHELIAL,
                    layer,
                    bool(rng.uniform() < ns.nucleoli),
                )


def place_sheet_nuclei(canvas: _NucleusCanvas, style: ClassStyle, rng: np.random.Generator) -> None:
    """Random sequential adsorption of pleomorphic nuclei filling the lesion (solid sheets).

    The target number of nuclei is drawn first and placed largest first (denser than random
    order), each at up to :data:`_SHEET_TRIES` random positions; trying sizes, not
    candidates, keeps the placed nuclei's size distribution close to the drawn one.
    """
    ns = style.nucleus
    area_um2 = np.count_nonzero(canvas.code == EPITHELIUM) * canvas.mpp**2
    target = int(style.sheet_density * area_um2 / 1e4)
    a_um, b_um = _lesion_nucleus_shape(ns, rng, target)
    nucleoli = rng.uniform(size=target) < ns.nucleoli
    cy, cx = _sample_in_codes(canvas.code, (EPITHELIUM,), _SHEET_TRIES * target, rng)
    ang = rng.uniform(0, math.pi, cy.size)
    allowed = _allowed(EPITHELIUM)
    j = 0
    for i in np.argsort(-(a_um * b_um), kind="stable"):
        for _ in range(_SHEET_TRIES):
            if j >= cy.size:
                return
            j += 1
            if canvas.try_place(
                cy[j - 1],
                cx[j - 1],
                a_um[i],
                b_um[i],
                ang[j - 1],
                allowed,
                NUC_EPITHELIAL,
                0,
                bool(nucleoli[i]),
            ):
                break


def place_stromal_nuclei(
    canvas: _NucleusCanvas,
    spec: SlideSpec,
    fibre_angle: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Sparse spindle nuclei aligned with the local fibre direction.

    ``fibre_angle`` is the coarse (gh, gw) float32 fibre direction in rad.
    """
    allowed = _allowed(STROMA, LESION_STROMA)
    for comp, dens in SPINDLE_DENSITY.items():
        area_um2 = np.count_nonzero(canvas.code == comp) * spec.mpp**2
        target = int(rng.uniform(*dens) * area_um2 / 1e4)
        cy, cx = _sample_in_codes(canvas.code, (comp,), 3 * target, rng)
        length, width = (
            rng.uniform(*SPINDLE_LENGTH_UM, cy.size),
            rng.uniform(*SPINDLE_WIDTH_UM, cy.size),
        )
        grid_pos = [
            ((cy + 0.5) * spec.mpp) / COARSE_UM - 0.5,
            ((cx + 0.5) * spec.mpp) / COARSE_UM - 0.5,
        ]
        ang = ndimage.map_coordinates(fibre_angle, grid_pos, order=0, mode="nearest")
        ang = ang + rng.normal(0, 0.15, cy.size)
        placed = 0
        for i in range(cy.size):
            if placed >= target:
                break
            placed += canvas.try_place(
                cy[i], cx[i], length[i] / 2, width[i] / 2, ang[i], allowed, NUC_STROMAL
            )


def place_focus(
    canvas: _NucleusCanvas,
    spec: SlideSpec,
    tissue: np.ndarray,
    lesion: np.ndarray,
    rng: np.random.Generator,
) -> tuple[float, float, float] | None:
    """Pack a disc of stroma on the ``spec.focus`` half of the tissue with lymphocytes.

    The disc (radius from :data:`FOCUS_RADIUS_UM`, shrunk down to
    :data:`FOCUS_MIN_RADIUS_UM` where the stroma is thin) is centred in stroma at least
    0.8 radius from lesion and background. Returns (cy_um, cx_um, radius_um), or None when no
    stroma on that half is wide enough (the slide then has no focus).
    """
    stroma = (tissue > 0) & ~(lesion > 0)
    dist = ndimage.distance_transform_edt(stroma) * COARSE_UM
    rows = np.flatnonzero((tissue > 0).any(axis=1))
    mid = (int(rows[0]) + int(rows[-1]) + 1) / 2
    half = np.zeros_like(stroma)
    if spec.focus == "upper":
        half[: int(mid)] = True
    else:
        half[math.ceil(mid) :] = True
    radius = rng.uniform(*FOCUS_RADIUS_UM)
    while radius >= FOCUS_MIN_RADIUS_UM:
        cand = np.flatnonzero(half & (dist >= 0.8 * radius))
        if cand.size:
            iy, ix = divmod(int(cand[rng.integers(0, cand.size)]), stroma.shape[1])
            cy_um, cx_um = (iy + 0.5) * COARSE_UM, (ix + 0.5) * COARSE_UM
            break
        radius *= 0.8
    else:
        return None
    mpp = canvas.mpp
    n_target = int(LYMPHOCYTE_DENSITY * math.pi * radius**2 / 1e4)
    n_cand = 4 * n_target
    # Uniform in the disc (sqrt for area), a little denser towards the centre.
    r = radius * rng.uniform(0, 1, n_cand) ** 0.6
    t = rng.uniform(0, 2 * math.pi, n_cand)
    d = rng.uniform(*LYMPHOCYTE_DIAMETER_UM, n_cand)
    asp = rng.uniform(1.0, 1.12, n_cand)
    allowed = _allowed(STROMA, LESION_STROMA)
    placed = 0
    for i in range(n_cand):
        if placed >= n_target:
            break
        placed += canvas.try_place(
            (cy_um + r[i] * math.sin(t[i])) / mpp - 0.5,
            (cx_um + r[i] * math.cos(t[i])) / mpp - 0.5,
            d[i] / 2 * math.sqrt(asp[i]),
            d[i] / 2 / math.sqrt(asp[i]),
            float(rng.uniform(0, math.pi)),
            allowed,
            NUC_LYMPHOCYTE,
        )
    return (cy_um, cx_um, radius) if placed else None


def slide_style(spec: SlideSpec) -> ClassStyle:
    """The class's style with the slide's planned nucleus size (sd, clip and gland epithelium
    scale with it)."""
    style = CLASS_STYLES[spec.label]
    if spec.nucleus_diameter_um is None:
        return style
    ns = style.nucleus
    k = spec.nucleus_diameter_um / ns.diameter_um[0]
    nucleus = replace(
        ns,
        diameter_um=(spec.nucleus_diameter_um, ns.diameter_um[1] * k),
        diameter_clip_um=(ns.diameter_clip_um[0] * k, ns.diameter_clip_um[1] * k),
    )
    # Gland epithelium thickens with its nuclei, or large nuclei would not fit in the ring.
    ring = tuple(r * max(k, 1.0) for r in style.ring_um)
    return replace(style, nucleus=nucleus, ring_um=ring)


# ----------------------------------------------------------------------------- colour


@dataclass
class _Textures:
    """Noise grids used for colour (all float32, cells in um given alongside)."""

    fibre_weights: np.ndarray  # (3, gh, gw) orientation-domain weights, coarse grid
    fibre_angles: np.ndarray  # (3,) rad
    wavelength_um: float
    warp: np.ndarray  # 12 um cells
    modulation: np.ndarray  # 3 um cells
    chromatin: np.ndarray  # 0.8 um cells
    stain_scale: tuple[float, float]  # slide-level (H, E) intensity multipliers


def _make_textures(spec: SlideSpec, rng: np.random.Generator) -> _Textures:
    yc, xc = _coarse_centres(spec)
    shape = (yc.shape[0], xc.shape[1])
    logits = np.stack([_smooth_noise(rng, shape, 120.0 / COARSE_UM) for _ in range(3)])
    weights = np.exp(3.0 * logits)
    weights /= weights.sum(axis=0, keepdims=True)
    base = rng.uniform(0, math.pi)
    angles = base + np.array([0.0, 1.0, 2.0]) * math.pi / 3 + rng.normal(0, 0.2, 3)
    return _Textures(
        fibre_weights=weights.astype(np.float32),
        fibre_angles=angles,
        wavelength_um=float(rng.uniform(5.5, 8.0)),
        warp=_value_noise(rng, spec, 12.0),
        modulation=_value_noise(rng, spec, 3.0),
        chromatin=_value_noise(rng, spec, 0.8),
        stain_scale=(float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.85, 1.15))),
    )


def fibre_angle_map(tex: _Textures) -> np.ndarray:
    """Coarse (gh, gw) dominant fibre direction in rad (argmax of domain weights)."""
    return tex.fibre_angles[np.argmax(tex.fibre_weights, axis=0)].astype(np.float32)


def _colour_band(
    spec: SlideSpec,
    style: ClassStyle,
    tex: _Textures,
    code: np.ndarray,
    labels: np.ndarray,
    nuc_stain: np.ndarray,
    nucleoli: np.ndarray,
    r0: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """RGB uint8 (nr, W, 3) for level-0 rows ``r0:r0 + nr`` (band of ``code``/``labels``)."""
    nr, w = code.shape
    # Bright background with a little sensor noise; +0.5 makes the uint8 cast round.
    i0 = 241.5 + 1.6 * rng.standard_normal((nr, w), dtype=np.float32)
    out = np.repeat(np.clip(i0, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    tissue_cols = np.flatnonzero(code.any(axis=0))
    if tissue_cols.size == 0:
        return out
    # Stain only the columns spanned by tissue in this band (saves the background).
    c0, c1 = int(tissue_cols[0]), int(tissue_cols[-1]) + 1
    code, labels, nucleoli, i0 = code[:, c0:c1], labels[:, c0:c1], nucleoli[:, c0:c1], i0[:, c0:c1]
    rows, cols = (r0, r0 + nr), (c0, c1)
    mpp = spec.mpp
    y_um = ((np.arange(*rows) + 0.5) * mpp).astype(np.float32)[:, None]
    x_um = ((np.arange(*cols) + 0.5) * mpp).astype(np.float32)[None, :]
    warp = _grid_rows(tex.warp, 12.0, mpp, rows, cols)
    k = np.float32(2 * math.pi / tex.wavelength_um)
    fibre = np.zeros(code.shape, dtype=np.float32)
    for wgt, ang in zip(tex.fibre_weights, tex.fibre_angles, strict=True):
        # Stripes run along ``ang``: phase varies along the normal direction.
        phase = (
            -x_um * np.float32(math.sin(ang)) + y_um * np.float32(math.cos(ang)) + 3.0 * warp
        ) * k
        fibre += _grid_rows(wgt, COARSE_UM, mpp, rows, cols) * (0.5 + 0.5 * np.sin(phase)) ** 2
    # Break the stripes into fibres of uneven strength.
    fibre *= np.clip(0.5 + 0.4 * _grid_rows(tex.modulation, 3.0, mpp, rows, cols), 0.0, 1.0)
    chrom = _grid_rows(tex.chromatin, 0.8, mpp, rows, cols)

    # Per-compartment stain optical densities (index = compartment code).
    e_base = np.array([0.0, 0.26, 0.18, 0.30, 0.04], dtype=np.float32)
    e_fibre = np.array([0.0, 0.40, 0.30, 0.0, 0.0], dtype=np.float32)
    e_grain = np.array([0.0, 0.0, 0.0, 0.05, 0.0], dtype=np.float32)
    h_base = np.array([0.0, 0.03, 0.05, style.cytoplasm_h, 0.0], dtype=np.float32)
    eod = e_base[code] + e_fibre[code] * fibre + e_grain[code] * chrom
    hod = h_base[code]

    nuc = labels > 0
    amp = np.float32(style.nucleus.chromatin)
    hod[nuc] = nuc_stain[labels[nuc]] * np.clip(1.0 + amp * chrom[nuc], 0.3, None)
    eod[nuc] = 0.12
    # Nucleoli: dark, eosinophilic (magenta) dots.
    hod[nucleoli] += 0.5
    eod[nucleoli] += 1.0

    hod *= np.float32(tex.stain_scale[0])
    eod *= np.float32(tex.stain_scale[1])
    for c in range(3):
        chan = i0 * np.exp(-(hod * _H_VEC[c] + eod * _E_VEC[c]))
        out[:, c0:c1, c] = np.clip(chan, 0, 255)
    return out


def _paint_nucleoli(labels: np.ndarray, nuclei: dict[str, np.ndarray], mpp: float) -> np.ndarray:
    """Bool (H, W) mask of small discs (radius 1 um) in nuclei flagged ``nucleolus``."""
    mask = np.zeros(labels.shape, dtype=bool)
    for i in np.flatnonzero(nuclei["nucleolus"]):
        rows, cols, _ = ellipse_pixels(
            nuclei["cy"][i], nuclei["cx"][i], 1.0 / mpp, 1.0 / mpp, 0.0, labels.shape
        )
        inside = labels[rows, cols] == i + 1
        mask[rows[inside], cols[inside]] = True
    return mask


# ----------------------------------------------------------------------------- main entry


def render_slide(spec: SlideSpec, rng: np.random.Generator) -> SlideRender:
    """Render the slide described by ``spec`` with the given per-slide generator.

    Returns a :class:`SlideRender` whose arrays have the level-0 shape
    (``spec.height_px``, ``spec.width_px``).
    """
    style = slide_style(spec)
    tissue, n_pieces = tissue_field(spec, rng)
    lesion = lesion_field(spec, tissue, spec.lesion_fraction, rng)
    sheets = style.architecture == "sheets"
    code = build_code_map(spec, tissue, lesion, EPITHELIUM if sheets else LESION_STROMA)
    glands: list = []
    if not sheets:
        glands = place_glands(spec, style, tissue, lesion, rng)
        paint_glands(code, glands, spec.mpp)
    tex = _make_textures(spec, rng)

    canvas = _NucleusCanvas(code, spec.mpp)
    if sheets:
        place_sheet_nuclei(canvas, style, rng)
    else:
        place_gland_nuclei(canvas, glands, style, rng)
    focus = place_focus(canvas, spec, tissue, lesion, rng) if spec.focus else None
    place_stromal_nuclei(canvas, spec, fibre_angle_map(tex), rng)
    nuclei = canvas.table()

    # Per-nucleus haematoxylin OD (index 0 unused = no nucleus).
    n = nuclei["cy"].size
    nuc_stain = np.zeros(n + 1, dtype=np.float32)
    epi = nuclei["type"] == NUC_EPITHELIAL
    nuc_stain[1:][epi] = rng.normal(*style.nucleus.stain, int(epi.sum()))
    nuc_stain[1:][~epi] = rng.normal(1.05, 0.06, int((~epi).sum()))
    lym = nuclei["type"] == NUC_LYMPHOCYTE
    nuc_stain[1:][lym] = rng.normal(1.6, 0.08, int(lym.sum()))  # dense, dark chromatin
    nucleoli = _paint_nucleoli(canvas.labels, nuclei, spec.mpp)

    rgb = np.empty((spec.height_px, spec.width_px, 3), dtype=np.uint8)
    for r0 in range(0, spec.height_px, BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, spec.height_px)
        rgb[r0:r1] = _colour_band(
            spec, style, tex, code[r0:r1], canvas.labels[r0:r1], nuc_stain, nucleoli[r0:r1], r0, rng
        )
    gland_list = [(cy, cx, la, lb, la + ring) for cy, cx, la, lb, _psi, ring in glands]
    return SlideRender(spec, rgb, canvas.labels, code, nuclei, n_pieces, gland_list, focus)


# ----------------------------------------------------------------------------- measurement


def _quadrant_shares(lesion: np.ndarray, tissue: np.ndarray) -> dict[str, float]:
    """Share of lesion pixels in each half/quadrant of the tissue bounding box."""
    rows, cols = np.nonzero(tissue)
    ymid = (rows.min() + rows.max() + 1) / 2
    xmid = (cols.min() + cols.max() + 1) / 2
    ly, lx = np.nonzero(lesion)
    total = max(ly.size, 1)
    up, left = ly < ymid, lx < xmid
    return {
        "upper": up.sum() / total,
        "left": left.sum() / total,
        "upper left": (up & left).sum() / total,
        "upper right": (up & ~left).sum() / total,
        "lower left": (~up & left).sum() / total,
        "lower right": (~up & ~left).sum() / total,
    }


def lesion_location(shares: dict[str, float]) -> str:
    """Where most of the lesion lies: a quadrant (>= 50 %), a half (>= 60 %) or ``diffuse``."""
    quads = ("upper left", "upper right", "lower left", "lower right")
    best = max(quads, key=lambda q: shares[q])
    if shares[best] >= 0.5:
        return best
    halves = {
        "upper": shares["upper"],
        "lower": 1 - shares["upper"],
        "left": shares["left"],
        "right": 1 - shares["left"],
    }
    side = max(halves, key=lambda k: halves[k])
    return side if halves[side] >= 0.6 else "diffuse"


def measure_slide(render: SlideRender) -> dict:
    """Ground-truth facts of a rendered slide, measured from its label and compartment maps.

    Units: lengths in um, areas in um2, densities in nuclei per 0.01 mm2 (10 000 um2),
    fractions in percent. Returns a JSON-serialisable dict (floats rounded).
    """
    spec, code, labels, nuc = render.spec, render.code, render.labels, render.nuclei
    px_area = spec.mpp**2
    counts = np.array([np.count_nonzero(code == c) for c in range(5)])
    tissue_px = int(counts[1:].sum())
    lesion_px = int(counts[list(LESION_CODES)].sum())
    stroma_px = int(counts[STROMA])

    step = max(1, round(4.0 / spec.mpp))  # 4 um sampling is plenty for shares/extent
    sub = code[::step, ::step]
    tissue_sub = sub != BACKGROUND
    shares = _quadrant_shares(np.isin(sub, LESION_CODES), tissue_sub)
    rows, cols = np.nonzero(tissue_sub)
    extent_mm = (
        (cols.max() - cols.min() + 1) * step * spec.mpp / 1000,
        (rows.max() - rows.min() + 1) * step * spec.mpp / 1000,
    )

    areas_um2 = np.bincount(labels.ravel(), minlength=nuc["cy"].size + 1)[1:] * px_area
    epi = nuc["type"] == NUC_EPITHELIAL
    stromal = nuc["type"] == NUC_STROMAL
    cy_i = np.clip(nuc["cy"].astype(int), 0, code.shape[0] - 1)
    cx_i = np.clip(nuc["cx"].astype(int), 0, code.shape[1] - 1)
    in_stroma = stromal & (code[cy_i, cx_i] == STROMA)
    diam = 2 * np.sqrt(areas_um2[epi] / math.pi)
    ecc = np.sqrt(1 - (nuc["b_um"][epi] / nuc["a_um"][epi]) ** 2)
    style = CLASS_STYLES[spec.label]

    def stat(x: np.ndarray, fn) -> float:
        return float(fn(x)) if x.size else 0.0

    glands = render.glands
    gap = []
    if len(glands) >= 2:
        g = np.array([(cy, cx, outer) for cy, cx, _la, _lb, outer in glands])
        d = np.hypot(g[:, None, 0] - g[None, :, 0], g[:, None, 1] - g[None, :, 1])
        d -= g[:, None, 2] + g[None, :, 2]
        np.fill_diagonal(d, np.inf)
        gap = d.min(axis=1)
    lym = nuc["type"] == NUC_LYMPHOCYTE
    focus_location = None
    if render.focus is not None:
        # Tissue bounding-box middle in um (rows of the 4 um subsample).
        mid_um = (rows.min() + rows.max() + 1) / 2 * step * spec.mpp
        focus_location = "upper" if render.focus[0] < mid_um else "lower"
    facts = {
        "mpp": spec.mpp,
        "width_um": spec.width_um,
        "height_um": spec.height_um,
        "width_px": spec.width_px,
        "height_px": spec.height_px,
        "n_tissue_pieces": render.n_pieces,
        "tissue_fraction_pct": 100 * tissue_px / code.size,
        "tissue_extent_mm": [round(extent_mm[0], 2), round(extent_mm[1], 2)],
        "lesion_fraction_pct": 100 * lesion_px / max(tissue_px, 1),
        "lesion_location": lesion_location(shares),
        "lesion_share_upper_pct": 100 * shares["upper"],
        "lesion_share_left_pct": 100 * shares["left"],
        "lesion_share_quadrant_pct": 100 * max(v for k, v in shares.items() if " " in k),
        "lesion_side": "left" if shares["left"] >= 0.5 else "right",
        "inflammation_focus": render.focus is not None,
        "focus_location": focus_location,
        "focus_diameter_um": 2 * render.focus[2] if render.focus is not None else 0.0,
        "n_focus_nuclei": int(lym.sum()),
        "architecture": style.architecture,
        "n_glands": len(glands),
        "gland_diameter_um_mean": stat(np.array([2 * g[4] for g in glands]), np.mean),
        "gland_gap_um_mean": stat(np.asarray(gap), np.mean),
        "stratified_pct": 100 * stat((nuc["layer"][epi] > 0).astype(float), np.mean),
        "n_lesion_nuclei": int(epi.sum()),
        "lesion_nuclei_per_0.01mm2": epi.sum() / max(lesion_px * px_area, 1) * 1e4,
        "stroma_nuclei_per_0.01mm2": in_stroma.sum() / max(stroma_px * px_area, 1) * 1e4,
        "lesion_nucleus_diameter_um_mean": stat(diam, np.mean),
        "lesion_nucleus_diameter_um_p10": stat(diam, lambda x: np.percentile(x, 10)),
        "lesion_nucleus_diameter_um_p90": stat(diam, lambda x: np.percentile(x, 90)),
        "lesion_nucleus_diameter_cv_pct": 100 * stat(diam, np.std) / max(stat(diam, np.mean), 1e-6),
        "lesion_nucleus_area_um2_mean": stat(areas_um2[epi], np.mean),
        "lesion_nucleus_eccentricity_mean": stat(ecc, np.mean),
        "nucleoli_pct": 100 * stat(nuc["nucleolus"][epi].astype(float), np.mean),
        "chromatin": style.nucleus.chromatin_word,
        "stroma_nucleus_length_um_mean": stat(2 * nuc["a_um"][stromal], np.mean),
        "stroma_nucleus_width_um_mean": stat(2 * nuc["b_um"][stromal], np.mean),
    }
    return {
        k: (round(float(v), 2) if isinstance(v, (float, np.floating)) else v)
        for k, v in facts.items()
    }
