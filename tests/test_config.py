from pathlib import Path

import pytest
import yaml

from hwsi_model.config import config_hash, load_config, validate_config
from hwsi_model.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_filled_in():
    cfg = validate_config({"samples": "s.csv", "outdir": "out"})
    assert cfg["mpp"] == 0.5
    assert cfg["patch_size"] == 256
    assert cfg["region_size"] == 16
    assert cfg["tissue"]["min_tissue_fraction"] == 0.25
    assert cfg["tissue"]["thumbnail_mpp"] == 8.0


def test_repository_config_is_valid():
    cfg = load_config(REPO / "config.yaml")
    assert cfg["samples"].endswith("samples.csv")


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"tisue": {}}, "tisue"),
        ({"tissue": {"blur": 3}}, "blur"),
        ({"patch_size": "big"}, "patch_size"),
        ({"mpp": -1}, "mpp"),
        ({"tissue": {"min_tissue_fraction": 2}}, "tissue.min_tissue_fraction"),
    ],
)
def test_bad_keys_are_named(patch, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_config({"samples": "s.csv", "outdir": "out", **patch})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="samples"):
        validate_config({"outdir": "out"})


def test_load_config_rejects_non_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_config_hash_is_stable_and_sensitive():
    a = config_hash({"mpp": 0.5, "patch_size": 256})
    assert a == config_hash({"patch_size": 256, "mpp": 0.5})
    assert a != config_hash({"mpp": 0.25, "patch_size": 256})
    assert len(a) == 12
