from pathlib import Path

import pytest
import yaml

from hwsi_model.errors import ConfigError
from hwsi_model.workflow_config import (
    config_hash,
    load_config,
    load_schema,
    require,
    validate_config,
)

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
        (
            {"training": {"stage2": {"epoch": 3}}},
            r"'epoch' was unexpected\) \(under 'training.stage2'",
        ),
        ({"training": {"stage3": {"llm_tuning": "half"}}}, "training.stage3.llm_tuning"),
        ({"training": {"resources": {"stage1": {"gpus": 1}}}}, "gpus"),
        ({"training": {"stage1": {"gpu": 1}}}, "'gpu' was unexpected"),  # resources: own key
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


def test_stage_settings_in_the_schema_are_the_stage_config_fields():
    """A typo in training.stageN fails when the config is read, not when the stage starts."""
    from dataclasses import fields

    from hwsi_model.training.stage_config import StageConfig

    stage = load_schema("config")["properties"]["training"]["properties"]["stage1"]
    set_by_the_workflow = {"stage", "visual_input"}
    assert set(stage["properties"]) == {f.name for f in fields(StageConfig)} - set_by_the_workflow
    cfg = validate_config({"samples": "s", "training": {"stage1": {"epochs": 3}}})
    assert cfg["training"]["stage1"] == {"epochs": 3}  # StageConfig keeps its own defaults
    assert cfg["training"]["resources"]["stage3"] == {
        "threads": 2, "gpu": 0, "mem_mb": 8000, "runtime": 60,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("tuning", "llm", "resolved"),
    [
        ("auto", "demo", "full"),  # the tiny LM built from the cohort
        ("auto", "smollm2", "lora"),  # a packaged pretrained LLM
        ("auto", "models/Qwen2.5-7B-Instruct", "lora"),  # any pretrained folder
        ("full", "smollm2", "full"),  # a setting is kept
        ("lora", "demo", "lora"),
    ],
)
def test_llm_tuning_auto_is_lora_for_a_pretrained_llm(tuning, llm, resolved):
    from hwsi_model.training.stage_config import StageConfig, resolve_llm_tuning

    assert validate_config({"samples": "s", "training": {"stage3": {"llm_tuning": tuning}}})
    assert resolve_llm_tuning(tuning, llm) == resolved
    with pytest.raises(ValueError, match="llm_tuning"):
        StageConfig(stage=3, llm_tuning="auto")  # resolved by the workflow, never passed on


def test_no_demo_defaults_and_unset_keys_are_named():
    cfg = validate_config({"samples": "s.csv"})
    assert "llm" not in cfg["training"] and "reports" not in cfg["training"]
    assert cfg["cells"]["training"]["gt_index"] is None
    with pytest.raises(ConfigError, match=r"'training.llm' is not set: .*causal-LM folder"):
        require(cfg, "training.llm")
    cfg["training"]["instructions"] = []
    with pytest.raises(ConfigError, match=r"'training.instructions' is not set"):
        require(cfg, "training.instructions")
    assert require({"training": {"llm": "demo"}}, "training.llm") == "demo"
