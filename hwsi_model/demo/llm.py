"""A tiny causal LM for the demo, built locally (nothing is downloaded).

A byte-level BPE tokenizer is trained on the demo cohort's own text (reports and VQA items), so
answers take few tokens, and a small Qwen2-shaped decoder is initialised at random. It is then
pretrained on text only (:func:`pretrain_on_text`): the training items' questions and answers
(without the slide) and the reports of those slides, with the options of closed questions
re-ordered. This stands in for a real LLM's pretraining: the model learns to read a question and
to answer with the letter of the option it means, but nothing in it can tell one slide from
another; that has to come from the visual tokens in stages 2-3.

Only the training split's text is seen, by the tokenizer as by the pretraining
(:func:`demo_llm_texts`): no validation or test report or question reaches either. The workflow
builds it with the ``build_demo_llm`` rule; by hand: ``python -m hwsi_model.demo llm --help``.
"""

from __future__ import annotations

import itertools
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


def demo_llm_texts(
    instruction_files: Sequence[str | Path],
    reports: str | Path | None,
    manifest: str | Path | None = None,
    split: str = "train",
) -> tuple[list[str], list[tuple[str | None, str]]]:
    """The tokenizer corpus and the pretraining pairs of the demo LLM, both from the slides of
    ``split`` in ``manifest`` only (all items' slides when no manifest is given)."""
    slides = None
    if manifest is not None:
        from hwsi_model.data.manifest import read_manifest

        slides = [r.slide_id for r in read_manifest(manifest, splits=[split])]
        if not slides:
            raise ValueError(f"{manifest} has no slide in split {split!r}")
    pairs = pretraining_texts(instruction_files, reports, slides)
    corpus = [q for q, _ in pairs if q is not None] + [a for _, a in pairs]
    return corpus, pairs


def build_demo_llm_from_files(
    out: str | Path,
    instruction_files: Sequence[str | Path],
    reports: str | Path | None,
    manifest: str | Path | None = None,
    split: str = "train",
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    pretrain_steps: int = 400,
) -> Path:
    """:func:`build_demo_llm` on :func:`demo_llm_texts` (the workflow's ``build_demo_llm``)."""
    corpus, pairs = demo_llm_texts(instruction_files, reports, manifest, split)
    return build_demo_llm(
        out, corpus, hidden, layers, seed=seed, pretrain=pairs, pretrain_steps=pretrain_steps
    )
