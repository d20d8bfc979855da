"""The default prompt bank and its embedding with the project's text encoder (a tiny local BERT)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hwsi_model.selection import DEFAULT_PROMPTS, embed_prompts, prompt_bank_id

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT whose word-piece vocabulary is the prompt bank's words."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for p in DEFAULT_PROMPTS for w in re.findall(r"\w+", p.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=64,
        )
        BertModel(config).save_pretrained(path)
    return path


def test_default_bank_is_short_distinct_pathology_prompts() -> None:
    assert 18 <= len(DEFAULT_PROMPTS) <= 30
    assert len(set(DEFAULT_PROMPTS)) == len(DEFAULT_PROMPTS)
    assert {"necrosis", "mitotic figures", "dense lymphocytic infiltrate"} <= set(DEFAULT_PROMPTS)
    assert all(len(p.split()) <= 8 for p in DEFAULT_PROMPTS)
    bank = prompt_bank_id(DEFAULT_PROMPTS)
    assert re.fullmatch(r"[0-9a-f]{12}", bank) and bank == prompt_bank_id(list(DEFAULT_PROMPTS))
    assert bank != prompt_bank_id(DEFAULT_PROMPTS[::-1])


def test_embed_prompts_with_the_project_text_encoder(tiny_text_dir: Path) -> None:
    from hwsi_model.model.text_encoder import TextEncoder

    enc = TextEncoder(tiny_text_dir)
    q = embed_prompts(enc)
    assert q.shape == (len(DEFAULT_PROMPTS), 24) and q.dtype == np.float32
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(q, embed_prompts(enc))  # deterministic
    assert np.abs(q[0] - q[1]).max() > 1e-4  # different prompts, different vectors
    # A projector maps the text space into the patch space (here 24 -> 8).
    proj = torch.nn.Linear(24, 8)
    qp = embed_prompts(enc, DEFAULT_PROMPTS[:3], projector=proj)
    assert qp.shape == (3, 8) and np.allclose(np.linalg.norm(qp, axis=1), 1.0, atol=1e-5)


def test_embed_prompts_accepts_any_encoding_callable() -> None:
    def encode(texts: list[str]) -> np.ndarray:
        return np.array([[len(t), 1.0] for t in texts])

    q = embed_prompts(encode, ["ab", "abcd"])
    assert np.allclose(q, [[2, 1] / np.sqrt(5), [4, 1] / np.sqrt(17)])
    with pytest.raises(ValueError, match="empty"):
        embed_prompts(encode, [])
