"""Shared fixtures: the real test slides in ../shared/testdata and small synthetic slides."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
SLIDES = TESTDATA / "slides"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    """Folder of real slides made by others; absent on a user's fresh clone."""
    if not SLIDES.is_dir():
        pytest.skip(f"real test slides not available ({SLIDES} is absent; CI provides it)")
    return SLIDES


@pytest.fixture(scope="session")
def cmu_slide(slides_dir: Path) -> Path:
    return slides_dir / "CMU-1-Small-Region.svs"


def synthetic_image(width: int, height: int, seed: int = 0, blank: bool = False) -> np.ndarray:
    """White ``[H, W, 3] uint8`` image with (unless ``blank``) a pink ellipse and dark dots."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 242, np.uint8)
    if blank:
        return img
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - width / 2) / (width * 0.35)) ** 2 + (
        (yy - height / 2) / (height * 0.3)
    ) ** 2 < 1
    img[inside] = (225, 150, 190)
    n = int(inside.sum() / 400)
    ys, xs = np.nonzero(inside)
    pick = rng.choice(len(ys), size=n, replace=False)
    for y, x in zip(ys[pick], xs[pick], strict=True):
        img[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] = (90, 50, 140)
    return img


@pytest.fixture
def make_slide(tmp_path: Path):
    """Factory: write a pyramidal JPEG TIFF (``mpp=None``: no resolution tags); return its path."""
    from hwsi_model.demo.pyramid_tiff import write_pyramid_tiff

    def _make(name: str, width: int, height: int, mpp: float | None, **kw) -> Path:
        path = tmp_path / f"{name}.tiff"
        img = synthetic_image(width, height, **kw)
        if mpp is None:
            tifffile.imwrite(path, img, photometric="rgb", tile=(256, 256), compression="jpeg")
        else:
            write_pyramid_tiff(path, img, mpp=mpp)
        return path

    return _make


@pytest.fixture
def venv_path_env() -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's folder (snakemake, hwsi)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A small synthetic demo cohort (6 slides, 0.5 and 0.25 um/px, ground-truth masks)."""
    from hwsi_model.demo import generate_demo_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_demo_cohort(out, n_slides=6, seed=3, scale=0.6, progress=False)
    return out


@pytest.fixture(scope="session")
def trained(cohort, tmp_path_factory):
    """A small StarDist2D really trained on the cohort's masks (1-2 minutes on 2 cores)."""
    from hwsi_model.cells.train import TrainParams, train_stardist

    out = tmp_path_factory.mktemp("models") / "stardist"
    params = TrainParams(epochs=16, steps_per_epoch=30)
    metrics = train_stardist(
        cohort / "nuclei_gt" / "index.csv", cohort / "samples.csv", out, params
    )
    return out, metrics
