"""Device placement: ``auto`` takes CUDA when there is one and the CPU otherwise; asking for CUDA
on a machine without it is one clear error; a model on a device answers from inputs given on
the CPU (the CUDA case runs only where a GPU is present). The LLM's dtype: ``auto`` is bf16 on a
bf16 GPU, fp32 on the CPU, and a training stage's precision while it trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_helpers import make_slide, tiny_config

from hwsi_model.devices import resolve_device, resolve_llm_dtype
from hwsi_model.errors import ConfigError
from hwsi_model.model.batch import collate_slides
from hwsi_model.model.configuration import HWSIConfig
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


def test_llm_dtype_auto_is_bf16_on_a_bf16_gpu_and_fp32_on_the_cpu(monkeypatch) -> None:
    assert HWSIConfig().llm_dtype == "auto"
    assert resolve_llm_dtype("float16") == "float16"  # an explicit choice stands
    with pytest.raises(ConfigError, match="llm_dtype 'half'"):
        resolve_llm_dtype("half")
    with pytest.raises(ValueError, match="llm_dtype must be one of"):
        HWSIConfig(llm_dtype="fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_llm_dtype("auto") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_llm_dtype("auto") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_llm_dtype("auto") == "float32"  # e.g. a V100: fp16 is not a safe default


def test_a_cpu_run_loads_the_llm_in_fp32(tiny_llm_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("the default is bf16 where CUDA has it")
    assert _model(tiny_llm_dir).llm.dtype == torch.float32


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_training_loads_the_llm_in_the_stage_precision(tiny_llm_dir, tmp_path, precision, dtype):
    """llm_dtype auto: a stage trains its LLM in the stage's precision, and the folder it saves
    keeps "auto" (inference then picks by device)."""
    from hwsi_model.model.checkpoint import save_model_folder
    from hwsi_model.training.stage_config import StageConfig
    from hwsi_model.training.stage_model import load_stage_model

    model = _model(tiny_llm_dir)
    save_model_folder(model, tmp_path / "m")
    loaded = load_stage_model(tmp_path / "m", StageConfig(stage=3, precision=precision))
    assert loaded.llm.dtype == dtype
    assert loaded.config.llm_dtype == "auto"
