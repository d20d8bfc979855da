import pytest

from hwsi_model.errors import SampleSheetError
from hwsi_model.samples import read_sample_sheet


def write(tmp_path, text):
    p = tmp_path / "samples.csv"
    p.write_text(text)
    return p


def test_reads_optional_columns_and_resolves_relative_paths(tmp_path):
    sheet = write(
        tmp_path,
        "slide_id,path,mpp,split,label,cohort\n"
        "a,slides/a.svs,0.25,train,benign,c1\n"
        "b,/data/b.svs,,test,,\n",
    )
    s = read_sample_sheet(sheet)
    assert list(s) == ["a", "b"]
    assert s["a"].path == str(tmp_path.resolve() / "slides" / "a.svs")
    assert s["a"].mpp == 0.25 and s["a"].split == "train" and s["a"].label == "benign"
    assert s["b"].path == "/data/b.svs"
    assert s["b"].mpp is None and s["b"].label is None


@pytest.mark.parametrize(
    ("sid", "needle"),
    [("a/b", "slide_id"), ("..", "slide_id"), ("x..y", "slide_id"), ("-x", "slide_id")],
)
def test_bad_slide_ids(tmp_path, sid, needle):
    sheet = write(tmp_path, f"slide_id,path\n{sid},x.svs\n")
    with pytest.raises(SampleSheetError, match=needle):
        read_sample_sheet(sheet)


def test_slide_id_rule_is_said_in_words_and_odd_sheets_are_named(tmp_path):
    with pytest.raises(SampleSheetError, match=r"row 2 \(\u00e51\): slide_id: a slide_id names"):
        read_sample_sheet(write(tmp_path, "slide_id,path\n\u00e51,x.svs\n"))
    folder = tmp_path / "sheet.csv"
    folder.mkdir()
    with pytest.raises(SampleSheetError, match="is a folder, not a CSV file"):
        read_sample_sheet(folder)
    # A byte-order mark and Windows line ends (a sheet saved by a spreadsheet program) read.
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfslide_id,path,mpp\r\na,x.svs,0.5\r\n")
    s = read_sample_sheet(bom)
    assert list(s) == ["a"] and s["a"].mpp == 0.5 and s["a"].path.endswith("x.svs")


def test_duplicate_ids(tmp_path):
    sheet = write(tmp_path, "slide_id,path\na,x.svs\na,y.svs\n")
    with pytest.raises(SampleSheetError, match="duplicate slide_id 'a'"):
        read_sample_sheet(sheet)


def test_missing_column(tmp_path):
    sheet = write(tmp_path, "id,path\na,x.svs\n")
    with pytest.raises(SampleSheetError, match="missing required column"):
        read_sample_sheet(sheet)


def test_bad_mpp(tmp_path):
    with pytest.raises(SampleSheetError, match="not a number"):
        read_sample_sheet(write(tmp_path, "slide_id,path,mpp\na,x.svs,fast\n"))
    with pytest.raises(SampleSheetError, match="mpp"):
        read_sample_sheet(write(tmp_path, "slide_id,path,mpp\na,x.svs,0\n"))


def test_missing_sheet_and_empty_sheet(tmp_path):
    with pytest.raises(SampleSheetError, match="does not exist"):
        read_sample_sheet(tmp_path / "nope.csv")
    with pytest.raises(SampleSheetError, match="no rows"):
        read_sample_sheet(write(tmp_path, "slide_id,path\n"))
