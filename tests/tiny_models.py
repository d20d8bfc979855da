"""Tiny language models the tests build and save locally (nothing is downloaded): a Qwen2-shaped
causal LM (the demo's builder) and a BERT text encoder, both over a given word list."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def build_tiny_llm(path: Path, words: Sequence[str], hidden: int, layers: int) -> Path:
    """A Qwen2-shaped causal LM with a byte-level BPE tokenizer and a chat template."""
    from hwsi_model.demo.llm import build_demo_llm

    return build_demo_llm(
        path,
        [" ".join(words)] * 4,
        hidden=hidden,
        layers=layers,
        vocab_size=400,
        seed=0,
        initializer_range=0.2,  # stronger random weights: visual tokens can steer the output
    )


def build_tiny_text_encoder(path: Path, words: Sequence[str], hidden: int, layers: int) -> Path:
    """A BERT with a word-piece vocabulary of ``words``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    return path


def build_tiny_clip(path: Path, words: Sequence[str], image_size: int = 32) -> Path:
    """A tiny CLIP-style model (transformers CLIPModel: ViT vision tower, text tower, a shared
    16-d space) with a word-piece tokenizer of ``words``, saved as a folder."""
    from transformers import BertTokenizerFast, CLIPConfig, CLIPModel

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(w.lower() for w in words)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 32, "eos_token_id": 3, "pad_token_id": 0},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    return path
