"""Prompt layout and tokenisation of the MLLM-HWSI model (the "processor" of a Hugging Face VLM).

One place says what the LLM reads: an optional system prompt, then the user turn with the visual
placeholder (``<image>``) on its own line before the question, rendered with the tokenizer's chat
template (``USER: ... ASSISTANT: `` when it has none); the answer follows, tokenised on its own,
then EOS. Only the answer tokens carry labels. The model (stages 2-3, generation), training and
the demo LLM's text-only pretraining all build their token ids here, so the layout cannot drift
between them.
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

    def format_prompt(self, question: str, with_image: bool = True) -> str:
        """The prompt text up to where the answer starts (generation prompt included)."""
        content = f"{self.placeholder}\n{question}" if with_image else question
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": content})
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return f"USER: {content}\nASSISTANT: "

    def encode(
        self,
        question: str | None,
        answer: str | None = None,
        with_image: bool = True,
        max_tokens: int | None = None,
    ) -> tuple[list[int], list[int]]:
        """Token ids and labels of one example.

        Args:
            question: the user turn; ``None`` for a plain text (``answer`` alone, e.g. a report
                in text-only pretraining), which then carries labels everywhere.
            answer: the target text (tokenised apart from the prompt, then EOS); ``None`` for a
                prompt to generate from.
            with_image: put the placeholder before the question (``False`` for text only).
            max_tokens: cut the sequence to this many tokens, keeping the final EOS.

        Returns:
            ``(ids, labels)``: ``labels`` is ``IGNORE_INDEX`` on the prompt.
        """
        tok = self.tokenizer
        ids: list[int] = []
        if question is not None:
            ids = tok(self.format_prompt(question, with_image), add_special_tokens=False)[
                "input_ids"
            ]
            if with_image and ids.count(self.placeholder_id) != 1:
                raise ValueError("the prompt must contain the placeholder exactly once")
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            ans = tok(answer, add_special_tokens=False)["input_ids"] + [self.eos_token_id]
            ids, labels = ids + ans, labels + ans
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
        self, questions: Sequence[str], answers: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Tokenise prompts (and answers) into right-padded ``[B, T]`` tensors.

        Returns ``input_ids``, ``attention_mask`` and, with answers, ``labels``: the answer ids
        plus EOS, -100 on the prompt and padding.
        """
        rows, labels = [], []
        for i, q in enumerate(questions):
            try:
                ids, lab = self.encode(q, answers[i] if answers is not None else None)
            except ValueError as exc:
                raise ValueError(f"prompt {i}: {exc}") from None
            rows.append(ids)
            labels.append(lab)
        return self.pad(rows, labels if answers is not None else None)

    def decode(self, ids: Tensor) -> list[str]:
        """Generated ids ``[B, T]`` to text (special tokens dropped)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
