"""Region annotations as masks: patch fractions by hand, and clear errors on bad indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwsi_model.data.annotations import (
    AnnotationError,
    MaskAnnotation,
    read_annotations,
    write_annotations,
    write_mask,
)


def _index(tmp_path: Path, um_per_px: float = 4.0) -> Path:
    mask = np.zeros((10, 20), bool)
    mask[:, :5] = True  # the left quarter: x < 20 um
    path = write_mask(tmp_path / "masks" / "s1.png", mask)
    return write_annotations(
        tmp_path / "index.csv", [MaskAnnotation("s1", path, um_per_px, "lesion")]
    )


def test_fraction_inside_by_hand_in_micrometres(tmp_path: Path) -> None:
    ann = read_annotations(_index(tmp_path))["s1"]
    assert ann.load().sum() == 50 and ann.path.is_file()
    # Slide at 0.5 um/px: a 20 um boundary is at x = 40 level-0 px; patches of 16 px.
    coords = np.array([[0, 0], [32, 0], [40, 0], [160, 0], [0, 1000]])
    frac = ann.fraction_inside(coords, 16, slide_mpp=0.5)
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0, 0.0, 0.0])  # the last is below the mask
    # The same geometry in micrometres on a slide scanned at 0.25 um/px.
    np.testing.assert_allclose(ann.fraction_inside(coords * 2, 32, slide_mpp=0.25), frac)


def test_index_paths_are_relative_and_round_trip(tmp_path: Path) -> None:
    index = _index(tmp_path)
    assert "masks/s1.png" in index.read_text()
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "_moved"))
    assert read_annotations(moved / "index.csv")["s1"].um_per_px == 4.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slide_id,mask,label\ns1,masks/s1.png,x\n", "missing column"),
        ("slide_id,mask,um_per_px,label\ns1,masks/nope.png,2,x\n", "does not exist"),
        ("slide_id,mask,um_per_px,label\ns1,masks/s1.png,0,x\n", "line 2: um_per_px"),
        ("slide_id,mask,um_per_px,label\ns1,masks/s1.png,abc,x\n", "line 2: um_per_px"),
        (
            "slide_id,mask,um_per_px,label\ns1,masks/s1.png,2,x\ns1,masks/s1.png,2,x\n",
            "line 3: slide 's1' is annotated twice",
        ),
    ],
)
def test_bad_indexes_are_named(tmp_path: Path, text: str, message: str) -> None:
    _index(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_annotations(bad)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_annotations(tmp_path / "none.csv")


def test_an_unreadable_mask_is_a_clear_error(tmp_path: Path) -> None:
    index = _index(tmp_path)
    (tmp_path / "masks" / "s1.png").write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match="cannot read the mask"):
        read_annotations(index)["s1"].load()
