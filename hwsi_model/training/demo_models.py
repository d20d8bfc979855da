"""A tiny causal LM for the demo, built locally (nothing is downloaded).

A byte-level BPE tokenizer is trained on the demo cohort's own text (reports and VQA items), so
answers take few tokens, and a small Qwen2-shaped decoder is initialised at random. It is then
pretrained on text only (:func:`pretrain_on_text`): the training items' questions and answers
(without the slide) and the reports of those slides, with the options of closed questions
re-ordered. This stands in for a real LLM's pretraining: the model learns to read a question and
to answer with the letter of the option it means, but nothing in it can tell one slide from
another; that has to come from the visual tokens in stages 2-3. Command line::

    python -m hwsi_model.training.demo_models --out results/models/tiny_llm \\
        --corpus cohort/reports.jsonl cohort/vqa/train.json --pretrain cohort/vqa/train.json \\
        --reports cohort/reports.jsonl --manifest results/manifest.csv --split train
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hwsi_model.atomic import atomic_output
from hwsi_model.data.text_records import LETTERS, InstructionItem

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


def option_permutations(item: InstructionItem, limit: int = 6) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs of a closed item with its options re-ordered (the original
    order first, at most ``limit``), letters and answer rewritten to match. Items whose question
    does not list the options as ``"A) text"`` lines come back unchanged."""
    pairs = [(item.question, item.answer)]
    opts = item.options
    if not item.is_closed or item.answer_letter not in LETTERS[: len(opts)]:
        return pairs
    lines = [f"{LETTERS[i]}) {o}" for i, o in enumerate(opts)]
    block = "\n".join(lines)
    correct = LETTERS.index(item.answer_letter)
    if block not in item.question or not item.answer.startswith(lines[correct]):
        return pairs
    rest = item.answer[len(lines[correct]) :]
    for perm in itertools.islice(itertools.permutations(range(len(opts))), 1, limit):
        new = [f"{LETTERS[j]}) {opts[i]}" for j, i in enumerate(perm)]
        question = item.question.replace(block, "\n".join(new))
        pairs.append((question, new[perm.index(correct)] + rest))
    return pairs


def pretraining_texts(
    instruction_files: Sequence[str | Path],
    reports: str | Path | None = None,
    slide_ids: Iterable[str] | None = None,
) -> list[tuple[str | None, str]]:
    """``(question, answer)`` pairs of the items (options re-ordered, no slide) and
    ``(None, report)`` for the reports of the same slides (only those: no report of a held-out
    slide is seen). ``slide_ids`` keeps only those slides' items (the training split)."""
    from hwsi_model.data.text_records import read_instructions, read_reports

    items = [it for f in instruction_files for it in read_instructions(f)]
    if slide_ids is not None:
        keep = set(slide_ids)
        items = [it for it in items if it.slide_id in keep]
    texts: list[tuple[str | None, str]] = [pair for it in items for pair in option_permutations(it)]
    if reports:
        slides = {it.slide_id for it in items}
        texts += [(None, r.report) for r in read_reports(reports) if r.slide_id in slides]
    return texts


def pretrain_on_text(
    model,
    tokenizer,
    texts: Sequence[tuple[str | None, str]],
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 3e-3,
    max_tokens: int = 384,
    seed: int = 0,
) -> list[float]:
    """Causal-LM training of ``model`` on ``(question, answer)`` texts; returns the losses.

    AdamW with linear warm-up and cosine decay; batches drawn with a seeded generator."""
    import math

    from hwsi_model.model.processor import HWSIProcessor

    g = torch.Generator().manual_seed(seed)
    # The prompt layout of stages 2-3, without the slide (no placeholder, no system turn).
    processor = HWSIProcessor(tokenizer)
    ids = [processor.encode(q, a, with_image=False, max_tokens=max_tokens)[0] for q, a in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    model.train()
    losses: list[float] = []
    for _ in tqdm(range(steps), desc="pretraining the demo LLM", leave=False):
        pick = torch.randint(len(ids), (batch_size,), generator=g).tolist()
        rows = [ids[i] for i in pick]
        T = max(len(r) for r in rows)
        x = torch.full((len(rows), T), tokenizer.pad_token_id)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for b, r in enumerate(rows):
            x[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        labels = x.masked_fill(mask == 0, -100)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_demo_llm(
    out: str | Path,
    texts: Sequence[str],
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
    initializer_range: float = 0.02,
    pretrain: Sequence[tuple[str | None, str]] = (),
    pretrain_steps: int = 400,
) -> Path:
    """Write a Qwen2-shaped LM and its tokenizer (with a chat template) to ``out`` atomically.

    The tokenizer is a byte-level BPE (as Qwen's) trained on ``texts``, so that
    ``Qwen2Tokenizer``, which ``AutoTokenizer`` picks for a qwen2 config, rebuilds exactly it.
    A larger ``initializer_range`` gives random weights that visual tokens can steer (tests).
    With ``pretrain`` (question, answer) texts the model is first trained on them
    (:func:`pretrain_on_text`).
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
    model = Qwen2ForCausalLM(config)
    if pretrain:
        losses = pretrain_on_text(model, tokenizer, pretrain, steps=pretrain_steps, seed=seed)
        log.info(
            "pretrained on %d texts for %d steps: loss %.3f -> %.3f",
            len(pretrain), len(losses), sum(losses[:10]) / 10, sum(losses[-10:]) / 10,
        )  # fmt: skip
    out = Path(out)
    with atomic_output(out) as tmp:
        model.save_pretrained(tmp)
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
    p.add_argument("--pretrain", nargs="*", default=[], help="instruction files to pretrain on")
    p.add_argument("--reports", help="reports (those of the --pretrain slides are used)")
    p.add_argument("--manifest", help="pretrain only on the slides of --split in this manifest")
    p.add_argument("--split", default="train")
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    pretrain = []
    if a.pretrain:
        slides = None
        if a.manifest:
            from hwsi_model.data.manifest import read_manifest

            slides = [r.slide_id for r in read_manifest(a.manifest, splits=[a.split])]
        pretrain = pretraining_texts(a.pretrain, a.reports, slides)
    build_demo_llm(
        a.out,
        corpus_texts(a.corpus),
        a.hidden,
        a.layers,
        seed=a.seed,
        pretrain=pretrain,
        pretrain_steps=a.pretrain_steps,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
