import pickle

import numpy as np
import openslide
import pytest

from hwsi_model.errors import MissingMppError, SlideOpenError, SlideReadError
from hwsi_model.slide.reader import open_slide


def test_cmu_metadata(cmu_slide):
    with open_slide(cmu_slide) as r:
        assert r.vendor == "aperio"
        assert r.dimensions == (2220, 2967)
        assert r.mpp == pytest.approx(0.499)
        assert r.mpp_info.source == "openslide.mpp-x/y"
        info = r.info()
    assert info["levels"][0]["dimensions"] == [2220, 2967]
    assert info["size_um"][0] == pytest.approx(2220 * 0.499, abs=0.1)


def test_sample_sheet_override_wins(cmu_slide):
    with open_slide(cmu_slide, mpp_override=0.25) as r:
        assert r.mpp == 0.25 and r.mpp_info.source == "sample_sheet"


def test_level0_read_matches_openslide(cmu_slide):
    with open_slide(cmu_slide) as r:
        ours = r.read_box(512, 768, 256, 256, 256, 256)
    ref = np.asarray(openslide.OpenSlide(str(cmu_slide)).read_region((512, 768), 0, (256, 256)))
    np.testing.assert_array_equal(ours, ref[..., :3])


def test_read_at_coarser_mpp_and_thumbnail(cmu_slide):
    with open_slide(cmu_slide) as r:
        patch = r.read_region_at_mpp(0, 0, 128, 64, mpp=1.0)
        thumb = r.thumbnail_at_mpp(8.0)
    assert patch.shape == (64, 128, 3) and patch.dtype == np.uint8
    assert thumb.shape == (round(2967 * 0.499 / 8), round(2220 * 0.499 / 8), 3)


def test_outside_the_image_is_white(cmu_slide):
    with open_slide(cmu_slide) as r:
        out = r.read_box(2220 + 10, 0, 32, 32, 32, 32)
    assert (out == 255).all()


def test_unopenable_slide_fails_clearly(slides_dir):
    with pytest.raises(SlideOpenError) as exc:
        open_slide(slides_dir / "unopenable.tiff", slide_id="bad")
    msg = str(exc.value)
    assert "slide 'bad'" in msg and "OpenSlide cannot open" in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(SlideOpenError, match="file not found"):
        open_slide(tmp_path / "gone.svs")


def test_unreadable_slide_fails_on_read(slides_dir):
    with (
        open_slide(slides_dir / "unreadable.svs", slide_id="u") as r,
        pytest.raises(SlideReadError, match="slide 'u': cannot read pixel data"),
    ):
        r.thumbnail_at_mpp(1.0)


def test_placeholder_resolution_counts_as_missing(slides_dir):
    # boxes.tiff carries 72 dpi (352.8 um/px), the default of image editors, not a scan resolution.
    with pytest.raises(MissingMppError) as exc:
        open_slide(slides_dir / "boxes.tiff", slide_id="boxes")
    assert "slide 'boxes'" in str(exc.value) and "'mpp' column" in str(exc.value)
    with open_slide(slides_dir / "boxes.tiff", mpp_override=0.5) as r:
        assert r.level_count == 4 and r.mpp == 0.5


def test_no_resolution_tags(make_slide):
    path = make_slide("notags", 600, 400, mpp=None)
    with pytest.raises(MissingMppError, match="no resolution"):
        open_slide(path)


def test_dicom_and_generic_tiff(slides_dir, make_slide):
    with open_slide(slides_dir / "boxes_0.dcm") as r:
        assert r.vendor == "dicom" and r.mpp == pytest.approx(0.499)
    with open_slide(make_slide("q", 1200, 900, mpp=0.25)) as r:
        assert r.vendor == "generic-tiff" and r.mpp == pytest.approx(0.25)
        assert r.level_count >= 2
        # 256 px at 0.5 um/px from a 0.25 um/px slide: a 512 px level-0 box, read from level 1.
        assert r.best_level(2.0) == 1
        patch = r.read_region_at_mpp(0, 0, 256, 256, mpp=0.5)
        assert patch.shape == (256, 256, 3)


def test_reader_is_not_picklable(cmu_slide):
    with open_slide(cmu_slide) as r, pytest.raises(TypeError, match="per worker"):
        pickle.dumps(r)


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "boxes.tiff"])
def test_direct_decoding_matches_openslide(slides_dir, name):
    """The tifffile fast path returns exactly OpenSlide's pixels, at every level it serves."""
    path = slides_dir / name
    with (
        open_slide(path, mpp_override=0.5) as fast,
        open_slide(path, mpp_override=0.5, direct_decode=False) as slow,
    ):
        assert fast._direct is not None and slow._direct is None
        w, h = fast.dimensions
        for x, y, w0, h0, ow, oh in [
            (0, 0, w, h, w, h),  # whole level 0
            (64, 32, 128, 96, 128, 96),
            (0, 0, w, h, w // 2, h // 2),  # from level 1 (or resized)
            (w - 50, h - 40, 100, 80, 100, 80),  # leaves the image: OpenSlide pads
        ]:
            np.testing.assert_array_equal(
                fast.read_box(x, y, w0, h0, ow, oh), slow.read_box(x, y, w0, h0, ow, oh)
            )


def test_direct_decoding_on_demo_pyramid(make_slide):
    path = make_slide("pyr", 1500, 1100, mpp=0.25)
    with open_slide(path) as fast, open_slide(path, direct_decode=False) as slow:
        assert fast._direct is not None
        for level_ds in (1, 2, 4):
            a = fast.read_box(256, 512, 512, 512, 512 // level_ds, 512 // level_ds)
            b = slow.read_box(256, 512, 512, 512, 512 // level_ds, 512 // level_ds)
            np.testing.assert_array_equal(a, b)


def _pixels(h: int = 700, w: int = 900) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[100:300, 200:600] = (180, 60, 120)  # a flat block, so that resizing has structure
    return img


def test_flat_tiffs_and_plain_images_read_like_a_pyramid_of_the_same_pixels(tmp_path):
    """Files OpenSlide refuses (stripped TIFF, PNG, JPEG) read through the plain-image path;
    their boxes and thumbnails equal those of a tiled TIFF of the same pixels read by
    OpenSlide."""
    import tifffile
    from PIL import Image

    img = _pixels()
    tiled = tmp_path / "tiled.tiff"
    tifffile.imwrite(tiled, img, photometric="rgb", tile=(256, 256), compression="zlib")
    flat = tmp_path / "flat.tiff"
    tifffile.imwrite(flat, img, photometric="rgb", rowsperstrip=32, compression="zlib")
    png = tmp_path / "crop.png"
    Image.fromarray(img).save(png)
    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(flat))  # the case this path exists for
    with open_slide(tiled, mpp_override=0.5) as ref:
        want = [
            ref.read_box(-50, 640, 300, 300, 300, 300),
            ref.read_box(100, 50, 512, 512, 256, 256),
        ]
        thumb = ref.thumbnail_at_mpp(4.0)
    for path in (flat, png):
        with open_slide(path, mpp_override=0.5) as r:
            assert r.vendor == "plain-image" and r.dimensions == (900, 700) and r.level_count == 1
            got = [
                r.read_box(-50, 640, 300, 300, 300, 300),
                r.read_box(100, 50, 512, 512, 256, 256),
            ]
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)  # outside the image: white, as OpenSlide
            np.testing.assert_array_equal(r.thumbnail_at_mpp(4.0), thumb)
    # Without a resolution: the sample sheet's mpp is asked for.
    with pytest.raises(MissingMppError, match="'mpp' column"):
        open_slide(png)
    jpg = tmp_path / "crop.jpg"
    Image.fromarray(img).save(jpg, quality=95)
    with open_slide(jpg, mpp_override=0.25) as r:
        assert r.read_box(0, 0, 64, 64, 64, 64).shape == (64, 64, 3)


def test_a_flat_tiff_with_resolution_tags_in_cm_gives_its_mpp(tmp_path):
    import tifffile

    path = tmp_path / "flat_res.tiff"
    # 20,000 px per cm = 0.5 um/px; tifffile writes RESUNIT 3 (centimetre).
    tifffile.imwrite(path, _pixels(64, 64), photometric="rgb", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")  # fmt: skip
    with open_slide(path) as r:
        assert r.mpp == pytest.approx(0.5) and r.mpp_info.source == "openslide.mpp-x/y"
    dpi72 = tmp_path / "dpi72.tiff"
    tifffile.imwrite(dpi72, _pixels(64, 64), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")  # fmt: skip
    with pytest.raises(MissingMppError, match="placeholder"):
        open_slide(dpi72)


def test_large_flat_images_are_downsampled_band_by_band(tmp_path, monkeypatch):
    """A thumbnail of a flat image (no coarser level) is read in bands below the size limit;
    the result matches the one-piece read up to the band edges' resampling."""
    import tifffile

    from hwsi_model.slide.reader import SlideReader

    path = tmp_path / "flat.tiff"
    tifffile.imwrite(path, _pixels(), photometric="rgb", rowsperstrip=16)
    with open_slide(path, mpp_override=0.5) as r:
        whole = r.thumbnail_at_mpp(4.0)
    reads = []
    monkeypatch.setattr(SlideReader, "max_read_px", 900 * 100)  # 100 rows of the image
    with open_slide(path, mpp_override=0.5) as r:
        original = r._read_rgb
        r._read_rgb = lambda *a: reads.append(a[3] * a[4]) or original(*a)
        banded = r.thumbnail_at_mpp(4.0)
    assert banded.shape == whole.shape and len(reads) >= 7
    assert max(reads) <= 900 * 100
    assert np.abs(banded.astype(int) - whole.astype(int)).mean() < 2.0


def test_a_truncated_flat_tiff_fails_on_read_with_a_clear_error(tmp_path):
    import tifffile

    path = tmp_path / "flat.tiff"
    tifffile.imwrite(path, _pixels(), photometric="rgb", rowsperstrip=16, compression="zlib")
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with (
        pytest.raises((SlideOpenError, SlideReadError), match="slide 'cut'"),
        open_slide(cut, mpp_override=0.5) as r,
    ):
        r.thumbnail_at_mpp(1.0)
