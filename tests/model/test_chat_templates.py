"""Prompts under real chat templates and multi-turn conversations (issue 15, item 5).

Two templates besides the demo's own: SmolLM2-135M-Instruct's (its real tokenizer, read from the
packaged GGUF) and a Qwen2-style ChatML template (a tokenizer carrying it, built here), each with
a tiny decoder of the matching vocabulary. Under each, the visual tokens must land where
``<image>`` stands in the first user turn, and a conversation must be trained with labels on
every assistant answer and generated from the same ids up to the answer of the turn asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_helpers import tiny_config

from hwsi_model.data.text_records import read_wsibench, whole_conversations
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.model.processor import IGNORE_INDEX

QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TURNS = [
    ("What is the diagnosis?", "High-grade carcinoma."),
    ("Are the nuclei enlarged?", "Yes, about 12 um across."),
    ("Is there a focus of inflammation?", "No."),
]


def _save_llm(folder: Path, tokenizer, arch: str) -> Path:
    """A 1-layer decoder (``qwen2`` or ``llama``) sized to ``tokenizer``, saved with it."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    kw = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
              max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = (
        Qwen2ForCausalLM(Qwen2Config(**kw))
        if arch == "qwen2"
        else LlamaForCausalLM(LlamaConfig(**kw))
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen2_dir(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN2_TEMPLATE
    return _save_llm(tmp_path_factory.mktemp("qwen2_style"), tok, "qwen2")


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    from hwsi_model.model.packaged_llm import packaged_gguf

    _, gguf = packaged_gguf("smollm2")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template
    return _save_llm(tmp_path_factory.mktemp("smollm2_tok"), tok, "llama")


def _model(folder: Path) -> HWSIModel:
    torch.manual_seed(0)
    return HWSIModel.from_config(tiny_config(llm_path=str(folder))).eval()


@pytest.mark.parametrize("which", ["qwen2_dir", "smollm2_dir"])
def test_visual_tokens_land_at_the_placeholder_of_the_template(which, request) -> None:
    model = _model(request.getfixturevalue(which))
    proc, tok = model.processor, model.tokenizer
    enc = proc(["What is the diagnosis?"])
    ids = enc["input_ids"][0]
    p = int((ids == proc.placeholder_id).nonzero())
    before = tok.decode(ids[:p])
    after = tok.decode(ids[p + 1 :])
    # The placeholder opens the user turn of the template, the question follows it.
    assert before.endswith("<|im_start|>user\n"), before
    assert after.startswith("\nWhat is the diagnosis?<|im_end|>"), after
    assert after.endswith("<|im_start|>assistant\n")
    visual = [torch.randn(5, model.llm.config.hidden_size)]
    embeds, mask, _ = model.build_inputs(enc["input_ids"], enc["attention_mask"], visual)
    # The placeholder itself is never embedded (the LLM's vocabulary need not hold it).
    text = model.llm.get_input_embeddings()(ids.masked_fill(ids == proc.placeholder_id, 0))
    assert torch.equal(embeds[0, :p], text[:p])
    assert torch.allclose(embeds[0, p : p + 5], visual[0])
    assert torch.equal(embeds[0, p + 5 :], text[p + 1 :])
    assert int(mask.sum()) == len(ids) - 1 + 5


@pytest.mark.parametrize("which", ["qwen2_dir", "smollm2_dir", "tiny_llm_dir"])
def test_a_conversation_trains_every_answer_and_generates_turn_by_turn(which, request) -> None:
    model = _model(request.getfixturevalue(which))
    proc, tok = model.processor, model.tokenizer
    history, (q, a) = TURNS[:-1], TURNS[-1]
    ids, labels = proc.encode(q, a, history=history)
    assert ids.count(proc.placeholder_id) == 1
    # Labels: every assistant answer (each then EOS), nothing else, in order.
    spans, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    spans.append(cur)
    assert [tok.decode(s[:-1]).strip() for s in spans] == [t[1] for t in TURNS]
    assert all(s[-1] == tok.eos_token_id for s in spans)
    # The prompt of turn k is the training sequence up to where answer k starts.
    starts = [
        i
        for i in range(1, len(labels))
        if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX
    ]
    for k in range(len(TURNS)):
        prompt, _ = proc.encode(TURNS[k][0], None, history=TURNS[:k])
        assert prompt == ids[: starts[k]]
    # The placeholder stands in the first user turn only, before its question.
    p = ids.index(proc.placeholder_id)
    assert TURNS[0][0] in tok.decode(ids[p : starts[0]])
    assert TURNS[1][0] not in tok.decode(ids[:p])
    # Batched: rows with and without history, labels on each row's answers.
    enc = proc([q, "What is the diagnosis?"], [a, "Benign."], histories=[history, []])
    assert int((enc["labels"][0] != IGNORE_INDEX).sum()) == sum(len(s) for s in spans)


def test_multi_turn_records_read_with_history_and_train_once(tmp_path: Path) -> None:
    conv = []
    for q, a in TURNS:
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    conv[0]["value"] = "<image>\n" + conv[0]["value"]
    records = [
        {"id": "c1", "image": "S1.svs", "conversations": conv},
        {"id": "c2", "image": "S1.svs", "conversations": conv[:2]},
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(records))
    items = read_wsibench(path)
    assert [it.id for it in items] == ["c1_t0", "c1_t1", "c1_t2", "c2"]
    assert [len(it.history) for it in items] == [0, 1, 2, 0]
    assert items[2].history == [TURNS[0], TURNS[1]]  # the <image> tag is not in the history
    assert items[2].conversation == "c1" and items[3].conversation == ""
    kept = whole_conversations(items)
    assert [it.id for it in kept] == ["c1_t2", "c2"]
