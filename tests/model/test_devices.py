"""Device placement: ``auto`` takes CUDA when there is one and the CPU otherwise; asking for CUDA
on a machine without it is one clear error; a model on a device answers from inputs given on
the CPU (the CUDA case runs only where a GPU is present)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_helpers import make_slide, tiny_config

from hwsi_model.devices import resolve_device
from hwsi_model.errors import ConfigError
from hwsi_model.model.batch import collate_slides
from hwsi_model.model.mllm import HWSIModel

QUESTIONS = ["what is the diagnosis ?", "describe the cells"]


def test_auto_picks_cuda_only_when_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")


def _answers(model: HWSIModel) -> list[str]:
    batch = collate_slides([make_slide(0), make_slide(1, n_regions=1, k=2)])  # on the CPU
    return model.generate(batch, QUESTIONS, max_new_tokens=6)


def _model(tiny_llm_dir: Path) -> HWSIModel:
    torch.manual_seed(0)
    return HWSIModel.from_config(tiny_config(llm_path=str(tiny_llm_dir))).eval()


def test_a_model_on_the_cpu_answers(tiny_llm_dir: Path) -> None:
    model = _model(tiny_llm_dir).to(resolve_device("cpu"))
    assert model.device.type == "cpu" and len(_answers(model)) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_answers_as_on_the_cpu(tiny_llm_dir: Path) -> None:
    model = _model(tiny_llm_dir)
    on_cpu = _answers(model)
    assert _answers(model.to(resolve_device("cuda"))) == on_cpu
