"""Prompt layout and tokenisation of the MLLM-HWSI model (the "processor" of a Hugging Face VLM).

One place says what the LLM reads: an optional system prompt, then the user turn with the visual
placeholder (``<image>``) on its own line before the question, rendered with the tokenizer's chat
template (``USER: ... ASSISTANT: `` when it has none); the answer follows, tokenised on its own,
then EOS. Only the answer tokens carry labels. The model (stages 2-3, generation), training and
the demo LLM's text-only pretraining all build their token ids here, so the layout cannot drift
between them.

A multi-turn conversation (``history``: the earlier (question, answer) turns) is laid out turn
by turn: each turn's prompt text is what the chat template adds for that user turn (the
rendering of the conversation so far with the new user turn and the generation prompt, minus
the rendering without it), its answer follows as above. The placeholder stands in the first
user turn only. Training puts labels on every assistant answer; a prompt to generate turn k
from is the same token ids up to where answer k starts, so training and evaluation read the
conversation identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100


class HWSIProcessor:
    """Chat prompt + tokenisation around one visual placeholder.

    Args:
        tokenizer: a Hugging Face tokenizer; the placeholder is added to it as a special token
            when missing, and its pad token falls back to EOS.
        placeholder: the token that the visual token groups replace.
        system_prompt: the system turn, or ``None`` for none.
    """

    def __init__(self, tokenizer, placeholder: str = "<image>", system_prompt: str | None = None):
        from transformers import AddedToken

        if placeholder not in tokenizer.get_vocab():
            tokenizer.add_tokens(
                [AddedToken(placeholder, special=True, normalized=False)], special_tokens=True
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.placeholder = placeholder
        self.placeholder_id = int(tokenizer.convert_tokens_to_ids(placeholder))
        self.system_prompt = system_prompt

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def format_prompt(
        self,
        question: str,
        with_image: bool = True,
        history: Sequence[tuple[str, str]] = (),
    ) -> str:
        """The prompt text up to where the answer starts (generation prompt included); with a
        ``history``, the whole conversation as the chat template renders it."""
        return "".join(self._turn_prompts([*history, (question, "")], with_image))

    def _messages(self, turns: Sequence[tuple[str, str]], with_image: bool) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for k, (q, a) in enumerate(turns):
            content = f"{self.placeholder}\n{q}" if with_image and k == 0 else q
            msgs += [{"role": "user", "content": content}, {"role": "assistant", "content": a}]
        return msgs

    def _turn_prompts(self, turns: Sequence[tuple[str, str]], with_image: bool) -> list[str]:
        """Per turn, the prompt text the chat template puts before its answer (the answers
        themselves are not included; a later prompt starts after the previous answer)."""
        tmpl = getattr(self.tokenizer, "chat_template", None)
        out: list[str] = []
        prev = ""
        for k in range(len(turns)):
            msgs = self._messages(turns[: k + 1], with_image)[:-1]  # up to user turn k
            if not tmpl:
                content = msgs[-1]["content"]
                out.append(f"{'' if k == 0 else chr(10)}USER: {content}\nASSISTANT: ")
                continue
            full = self.tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=True
            )
            # The answer of turn k - 1 and the template's end-of-turn text precede this prompt;
            # the answer is tokenised apart (then EOS), so only what follows it is kept here.
            cut = len(prev) if full.startswith(prev) else _common_prefix(full, prev)
            out.append(full[cut:])
            if k + 1 < len(turns):
                prev = self.tokenizer.apply_chat_template(
                    self._messages(turns[: k + 1], with_image), tokenize=False
                )
        return out

    def encode(
        self,
        question: str | None,
        answer: str | None = None,
        with_image: bool = True,
        max_tokens: int | None = None,
        history: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[int], list[int]]:
        """Token ids and labels of one example.

        Args:
            question: the user turn; ``None`` for a plain text (``answer`` alone, e.g. a report
                in text-only pretraining), which then carries labels everywhere.
            answer: the target text (tokenised apart from the prompt, then EOS); ``None`` for a
                prompt to generate from.
            with_image: put the placeholder before the (first) question (``False`` for text
                only).
            max_tokens: cut the sequence to this many tokens, keeping the final EOS.
            history: earlier (question, answer) turns of the conversation; their answers carry
                labels too (loss on every assistant turn).

        Returns:
            ``(ids, labels)``: ``labels`` is ``IGNORE_INDEX`` on the prompts.
        """
        tok = self.tokenizer
        ids: list[int] = []
        labels: list[int] = []
        if question is not None:
            turns = [*history, (question, answer)]
            prompts = self._turn_prompts([(q, a or "") for q, a in turns], with_image)
            for (_, a), prompt in zip(turns, prompts, strict=True):
                p = tok(prompt, add_special_tokens=False)["input_ids"]
                ids, labels = ids + p, labels + [IGNORE_INDEX] * len(p)
                if a is not None:
                    ans = tok(a, add_special_tokens=False)["input_ids"] + [self.eos_token_id]
                    ids, labels = ids + ans, labels + ans
            if with_image and ids.count(self.placeholder_id) != 1:
                raise ValueError("the prompt must contain the placeholder exactly once")
        elif answer is not None:
            ids = tok(answer, add_special_tokens=False)["input_ids"] + [self.eos_token_id]
            labels = list(ids)
        if max_tokens is not None and len(ids) > max_tokens:
            ids = [*ids[: max_tokens - 1], ids[-1]]
            labels = [*labels[: max_tokens - 1], labels[-1]]
        return ids, labels

    def pad(self, ids: Sequence[list[int]], labels: Sequence[list[int]] | None = None):
        """Right-pad rows into ``input_ids``, ``attention_mask`` (and ``labels``) ``[B, T]``."""
        T = max(len(r) for r in ids)
        pad = self.pad_token_id
        out = {
            "input_ids": torch.tensor([r + [pad] * (T - len(r)) for r in ids]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in ids]),
        }
        if labels is not None:
            out["labels"] = torch.tensor([x + [IGNORE_INDEX] * (T - len(x)) for x in labels])
        return out

    def __call__(
        self,
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
        histories: Sequence[Sequence[tuple[str, str]]] | None = None,
    ) -> dict[str, Tensor]:
        """Tokenise prompts (and answers) into right-padded ``[B, T]`` tensors.

        ``histories``: per row, the earlier turns of its conversation (default none).
        Returns ``input_ids``, ``attention_mask`` and, with answers, ``labels``: the answer ids
        plus EOS (of every turn), -100 on the prompts and padding.
        """
        rows, labels = [], []
        for i, q in enumerate(questions):
            history = histories[i] if histories is not None else ()
            try:
                ids, lab = self.encode(
                    q, answers[i] if answers is not None else None, history=history
                )
            except ValueError as exc:
                raise ValueError(f"prompt {i}: {exc}") from None
            rows.append(ids)
            labels.append(lab)
        return self.pad(rows, labels if answers is not None else None)

    def decode(self, ids: Tensor) -> list[str]:
        """Generated ids ``[B, T]`` to text (special tokens dropped)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
