"""Nuclei only where there are nuclei: detections per mm^2 on nucleus-rich and nucleus-free
real H&E, with and without the haematoxylin check, per StarDist model folder.

Images (``../shared/testdata``): StarDist's ``histo.jpg`` and the densest 256 px crop of
``CMU-1-Small-Region.svs`` (nucleus-rich), the same two without their haematoxylin (colour
deconvolution: eosin-only tissue with real texture), and blank glass. Each image is
segmented at 0.5 um/px (the demo model's resolution; histo.jpg has no recorded resolution and
is taken as 0.5) twice: contrast-stretched on its own (the worst case, as a single image used
to be) and with the slide's percentiles (as the workflow does).

Usage: python benchmarks/bench_nuclei_specificity.py MODEL_DIR [MODEL_DIR ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwsi_model.cells.detect import detect_nuclei  # noqa: E402
from hwsi_model.cells.model_registry import load_stardist  # noqa: E402
from hwsi_model.cells.normalize import slide_percentiles  # noqa: E402
from hwsi_model.cells.stain import (  # noqa: E402
    blank_glass,
    hematoxylin_density,
    remove_hematoxylin,
)
from hwsi_model.slide.reader import open_slide  # noqa: E402

MPP = 0.5


def images(testdata: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The test images by name, and a downsampled CMU region for slide-level percentiles."""
    from PIL import Image

    histo = np.asarray(Image.open(testdata / "tiles" / "histo.jpg").convert("RGB"))
    with open_slide(testdata / "slides" / "CMU-1-Small-Region.svs") as reader:
        w, h = reader.dimensions
        region = reader.read_box(0, 0, w, h, w, h)
    crops = [region[y : y + 256, x : x + 256] for y in range(0, h - 256, 256)
             for x in range(0, w - 256, 256)]  # fmt: skip
    dense = max(crops, key=lambda c: float((hematoxylin_density(c) > 0.08).mean()))
    found = {
        "histo.jpg (nucleus-rich)": histo,
        "CMU dense crop (nucleus-rich)": dense,
        "histo.jpg eosin only": remove_hematoxylin(histo),
        "CMU dense crop eosin only": remove_hematoxylin(dense),
        "blank glass": blank_glass((256, 256, 3)),
    }
    return found, region[::4, ::4]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="StarDist model folders")
    p.add_argument("--testdata", default=str(ROOT.parent / "shared" / "testdata"))
    p.add_argument("--min-hematoxylin", type=float, default=0.03)
    p.add_argument("--prob-thresh", type=float, default=0.5)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    imgs, slide_sample = images(Path(a.testdata))
    slide_pct = slide_percentiles([slide_sample])
    rows = []
    for folder in a.models:
        model, _ = load_stardist(folder)
        for name, rgb in imgs.items():
            mm2 = rgb.shape[0] * rgb.shape[1] * MPP * MPP / 1e6
            for norm, pct in (("own", slide_percentiles([rgb])), ("slide", slide_pct)):
                nuc = detect_nuclei(model, rgb, pct, MPP, prob_thresh=a.prob_thresh,
                                    min_hematoxylin=a.min_hematoxylin)  # fmt: skip
                rows.append({
                    "model": Path(folder).name, "image": name, "normalisation": norm,
                    "per_mm2_unchecked": round((len(nuc) + nuc.rejected) / mm2),
                    "per_mm2_checked": round(len(nuc) / mm2), "area_mm2": round(mm2, 4),
                })  # fmt: skip
    print("| model | image | stretched | detections/mm^2 unchecked | with the check |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['image']} | {r['normalisation']} | "
              f"{r['per_mm2_unchecked']} | {r['per_mm2_checked']} |")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "settings": vars(a)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
