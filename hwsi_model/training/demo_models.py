"""A tiny causal LM for the demo, built locally (nothing is downloaded).

A byte-level BPE tokenizer is trained on the demo cohort's own text (reports and VQA items), so
answers take few tokens, and a small Qwen2-shaped decoder is initialised at random: the demo
shows the pipeline learning, not a language model's knowledge. Command line::

    python -m hwsi_model.training.demo_models --out results/models/tiny_llm \\
        --corpus cohort/reports.jsonl cohort/vqa/train.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from hwsi_model.atomic import atomic_output

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def corpus_texts(paths: Iterable[str | Path]) -> list[str]:
    """All strings of JSON/JSONL files (reports, questions, answers, options)."""
    texts: list[str] = []

    def walk(obj) -> None:
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for p in paths:
        p = Path(p)
        lines = p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]
        for line in lines:
            if line.strip():
                walk(json.loads(line))
    return texts


def build_demo_llm(
    out: str | Path,
    texts: Sequence[str],
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Write a Qwen2-shaped LM and its tokenizer (with a chat template) to ``out`` atomically.

    The tokenizer is a byte-level BPE (as Qwen's) trained on ``texts``, so that
    ``Qwen2Tokenizer``, which ``AutoTokenizer`` picks for a qwen2 config, rebuilds exactly it.
    A larger ``initializer_range`` gives random weights that visual tokens can steer (tests).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) or ["empty"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        additional_special_tokens=SPECIALS[2:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size() + 8,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
        pad_token_id=tok.token_to_id("<pad>"),
        eos_token_id=tok.token_to_id("<eos>"),
        bos_token_id=None,
    )
    out = Path(out)
    with atomic_output(out) as tmp:
        Qwen2ForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info(
        "demo LLM (%d layers, width %d, vocab %d) -> %s", layers, hidden, config.vocab_size, out
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from hwsi_model.logs import setup_logging

    p = argparse.ArgumentParser(description="build the demo's tiny causal LM")
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", nargs="+", required=True)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    build_demo_llm(a.out, corpus_texts(a.corpus), a.hidden, a.layers, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
