"""Configuration schema access and the hash that ties outputs to the parameters they depend on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hwsi_model.errors import ConfigError


def schema_path(name: str) -> Path:
    """Path of a bundled JSON schema (YAML), e.g. ``schema_path("config")``."""
    return Path(str(resources.files("hwsi_model") / "schemas" / f"{name}.schema.yaml"))


def load_schema(name: str) -> dict[str, Any]:
    """Load a bundled JSON schema (``config`` or ``samples``)."""
    with open(schema_path(name)) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_cls: type) -> type:
    """Extend a jsonschema validator to fill in ``default`` values (as Snakemake does)."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, json.loads(json.dumps(sub["default"])))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def format_validation_error(err: jsonschema.ValidationError, what: str = "config") -> str:
    """One-line message naming the offending key, e.g. ``config key 'tissue.blur_um': ...``."""
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        return f"{what}: {err.message}" + (f" (under '{path}')" if path else "")
    return f"{what} key '{path or '<root>'}': {err.message}"


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a config mapping against the bundled schema and return a copy with defaults.

    Raises:
        ConfigError: naming the unknown or mistyped key.
    """
    data = json.loads(json.dumps(dict(config)))
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema("config"))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(format_validation_error(e) for e in errors))
    return data


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    if Path(path).is_dir():
        raise ConfigError(f"config file {path} is a folder; give the YAML file")
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"config file {path} cannot be read: {' '.join(str(exc).split())}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    return validate_config(raw)


#: Keys with no default (the schema holds no demo paths): what to set, for the error message.
UNSET_HINTS = {
    "training.reports": "the WSI-report pairs (JSONL/JSON/CSV) of stages 1-2",
    "training.instructions": "the stage-3 instruction files (a list)",
    "training.llm": 'a local Hugging Face causal-LM folder, or "demo" for the tiny demo LM',
    "cells.training.gt_index": 'the ground-truth nucleus masks\' index CSV (cells.model "demo")',
}


def require(config: Mapping[str, Any], key: str) -> Any:
    """The value of a dotted ``key`` that a step needs and the config leaves unset.

    Raises:
        ConfigError: naming the key and what to set, when it is missing, null or empty.
    """
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None or value == "" or value == []:
        hint = UNSET_HINTS.get(key, "a value")
        raise ConfigError(f"config key '{key}' is not set: set it to {hint}")
    return value


def config_hash(values: Mapping[str, Any]) -> str:
    """Short stable hash (12 hex) of the parameter values an output depends on.

    Passed to rules as a ``params`` entry, so that changing one of these values re-runs the
    outputs that depend on it (and nothing else), and recorded in each store's attributes.
    """
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
