"""The processor: one prompt layout for stages 2-3, generation and text-only pretraining."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hwsi_model.model.processor import IGNORE_INDEX, HWSIProcessor


@pytest.fixture()
def tokenizer(tiny_llm_dir: Path):
    return AutoTokenizer.from_pretrained(str(tiny_llm_dir), local_files_only=True)


def test_prompt_layout_system_placeholder_then_question(tokenizer) -> None:
    proc = HWSIProcessor(tokenizer, system_prompt="you read slides")
    prompt = proc.format_prompt("grade ?")
    assert prompt.index("you read slides") < prompt.index("<image>") < prompt.index("grade ?")
    assert prompt == tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "you read slides"},
            {"role": "user", "content": "<image>\ngrade ?"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    text_only = HWSIProcessor(tokenizer).format_prompt("grade ?", with_image=False)
    assert "<image>" not in text_only and "you read slides" not in text_only


def test_encode_labels_answer_and_eos_and_truncates_keeping_eos(tokenizer) -> None:
    proc = HWSIProcessor(tokenizer)
    ids, labels = proc.encode("grade ?", "high grade", with_image=False)
    n_prompt = labels.count(IGNORE_INDEX)
    assert ids[n_prompt:] == labels[n_prompt:] and labels[-1] == proc.eos_token_id
    assert tokenizer.decode(ids[n_prompt:-1]) == "high grade"
    short, short_labels = proc.encode("grade ?", "high grade", with_image=False, max_tokens=4)
    assert len(short) == 4 and short[-1] == proc.eos_token_id == short_labels[-1]
    # A plain text (a report) is supervised on every token.
    text, text_labels = proc.encode(None, "a report")
    assert text == text_labels and proc.placeholder_id not in text


def test_a_question_holding_the_placeholder_is_refused(tokenizer) -> None:
    proc = HWSIProcessor(tokenizer)
    with pytest.raises(ValueError, match=r"prompt 1: .*placeholder exactly once"):
        proc(["fine ?", "look at <image> twice ?"])
