import json
import subprocess
import sys

import pytest

from hwsi_model.cli import main


def hwsi(*args):
    return subprocess.run(
        [sys.executable, "-m", "hwsi_model.cli", *map(str, args)], capture_output=True, text=True
    )


def test_info_reports_mpp_and_its_source(cmu_slide):
    proc = hwsi("info", cmu_slide)
    assert proc.returncode == 0, proc.stderr
    assert "aperio" in proc.stdout
    assert "0.4990 x 0.4990 um/px (from openslide.mpp-x/y)" in proc.stdout
    assert "2220 x 2967" in proc.stdout


def test_info_json_with_override(cmu_slide, capsys):
    assert main(["info", str(cmu_slide), "--json", "--mpp", "0.25"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == 0.25 and info["mpp_source"] == "sample_sheet"


def test_info_on_unopenable_slide_is_one_line(slides_dir):
    proc = hwsi("info", slides_dir / "unopenable.tiff")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "OpenSlide cannot open" in errors[0]
    assert "Traceback" not in proc.stderr


def test_info_on_a_file_without_resolution_says_what_to_add(make_slide):
    """`hwsi info` is how a user finds out what a file holds: no mpp is a finding, not an error."""
    slide = make_slide("no_mpp", 600, 400, mpp=None)
    proc = hwsi("info", slide, "--properties")
    assert proc.returncode == 0, proc.stderr
    assert "600 x 400 px (level 0)" in proc.stdout and "format      generic-tiff" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("mpp"))
    assert "unknown" in line and "add an 'mpp' column" in line
    assert "tiff.Software = tifffile.py" in proc.stdout  # --properties: the file's own tags
    info = json.loads(hwsi("info", slide, "--json").stdout)
    assert info["mpp"] is None and info["size_um"] is None and "properties" not in info
    assert json.loads(hwsi("info", slide, "--json", "--mpp", "0.5").stdout)["mpp"] == 0.5


def test_check_config_reports_slide_files_that_cannot_be_read(tmp_path, cmu_slide):
    sheet = tmp_path / "s.csv"
    sheet.write_text(f"slide_id,path\ncmu,{cmu_slide}\ngone,gone.svs\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"samples: {sheet}\noutdir: out\n")
    proc = hwsi("check-config", cfg)
    assert proc.returncode == 1
    assert "1 of 2 slide file(s)" in proc.stderr and "gone (" in proc.stderr
    assert "missing" in proc.stderr and "cmu (" not in proc.stderr
    sheet.write_text(f"slide_id,path\ncmu,{cmu_slide}\n")
    proc = hwsi("check-config", cfg)
    assert proc.returncode == 0 and "every file present" in proc.stderr + proc.stdout


def test_tile_command(cmu_slide, tmp_path):
    proc = hwsi("tile", cmu_slide, "--out", tmp_path, "--region-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiles" / "CMU-1-Small-Region.zarr" / "zarr.json").is_file()
    assert (tmp_path / "qc" / "tiling" / "CMU-1-Small-Region.png").is_file()


def test_check_config_names_bad_key(tmp_path):
    (tmp_path / "s.csv").write_text("slide_id,path\na,a.svs\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"samples: {tmp_path / 's.csv'}\noutdir: out\npatch_sise: 3\n")
    proc = hwsi("check-config", cfg)
    assert proc.returncode == 1 and "patch_sise" in proc.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "{missing}"], "file not found"),
        (["info", "{folder}"], "is a folder, not a slide file"),
        (["tile", "{folder}", "--out", "{tmp}/t"], "is a folder, not a slide file"),
        (["segment", "{missing}", "--mpp", "0.5", "--out", "{tmp}/s"], "does not exist"),
        (["segment", "{folder}", "--mpp", "0.5", "--out", "{tmp}/s"], "is a folder"),
        (["check-config", "{missing}"], "does not exist"),
        (["check-config", "{folder}"], "is a folder"),
        (["check", "{missing}"], "does not exist"),
        (["retry-failed", "{missing}"], "does not exist"),
        (["metrics", "{folder}"], "is a folder"),
        (["metrics", "{missing}"], "does not exist"),
    ],
)
def test_bad_paths_are_one_line_errors_and_write_nothing(tmp_path, args, needle, capfd):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    names = {"missing": tmp_path / "nothing.svs", "folder": folder, "tmp": tmp_path}
    argv = [a.format(**names) for a in args]
    assert main(argv) == 1
    err = capfd.readouterr().err
    errors = [ln for ln in err.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and needle in errors[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder"]  # no output made


def test_a_slide_given_as_a_symbolic_link_reads_as_its_target(cmu_slide, tmp_path):
    link = tmp_path / "link.svs"
    link.symlink_to(cmu_slide)
    linked, direct = (hwsi("info", p, "--json") for p in (link, cmu_slide))
    assert linked.returncode == 0 and direct.returncode == 0, linked.stderr
    linked, direct = json.loads(linked.stdout), json.loads(direct.stdout)
    assert linked["dimensions"] == direct["dimensions"] and linked["mpp"] == direct["mpp"]
