"""Fixtures of the model tests: a tiny causal LM and text encoder built once per session and saved
to a temporary folder (never downloaded). Helpers live in ``model_helpers``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from model_helpers import build_tiny_llm, build_tiny_text_encoder

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_text_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_text_encoder(tmp_path_factory.mktemp("tiny_text"))
