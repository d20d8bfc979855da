"""Relevance from the encoder's own text tower (issue 15, item 7): a CLIP-family encoder embeds
patches and the prompt bank into one space; the workflow embeds the bank once and the selection
scores every patch against it. Built on a tiny CLIP-style model made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_clip

from hwsi_model.encoders import load_encoder
from hwsi_model.errors import ConfigError
from hwsi_model.selection.prompts import DEFAULT_PROMPTS
from hwsi_model.selection.text_queries import write_prompt_queries

WORDS = " ".join(DEFAULT_PROMPTS).replace(",", " ").split()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), WORDS)


def test_clip_encoder_embeds_patches_and_text_in_one_space(tiny_clip: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    enc = load_encoder("clip", tiny_clip)
    assert enc.has_text_tower and enc.embed_dim == 16 and enc.token_dim == 32
    patches = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    x = enc.preprocess(patches)
    pooled, tokens = enc.forward_with_tokens(x)
    assert pooled.shape == (3, 16) and tokens.shape == (3, 4, 4, 32)
    texts = ["dense lymphocytic infiltrate", "necrosis"]
    # The same vectors as transformers' own image and text features of the model.
    ref = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = AutoTokenizer.from_pretrained(tiny_clip)
    with torch.no_grad():
        img = ref.get_image_features(pixel_values=x)
        txt = ref.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    assert torch.allclose(pooled, img, atol=1e-5)
    assert torch.allclose(enc.encode_text(texts), txt, atol=1e-5)


def test_prompt_queries_file_and_an_encoder_without_text_tower(tiny_clip: Path, tmp_path) -> None:
    q = write_prompt_queries("clip", tiny_clip, tmp_path / "q.npy", ["necrosis", "mucin"])
    assert q.shape == (2, 16) and np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(np.load(tmp_path / "q.npy"), q)
    about = json.loads((tmp_path / "q.json").read_text())
    assert about["prompts"] == ["necrosis", "mucin"] and about["encoder"] == "clip"
    default = write_prompt_queries("clip", tiny_clip, tmp_path / "d.npy")
    assert default.shape == (len(DEFAULT_PROMPTS), 16)

    from hwsi_model.demo.tiny_encoder import build_tiny_encoder

    vit = build_tiny_encoder(tmp_path / "vit")
    with pytest.raises(ConfigError, match=r"needs embed\.selection\.query_file .* text tower"):
        write_prompt_queries("tiny-vit", vit, tmp_path / "x.npy")
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.workflow
def test_workflow_selects_patches_by_the_text_towers_prompts(
    tmp_path, cohort, trained, tiny_clip, venv_path_env
) -> None:
    """query: prompts without a query_file: rule embed_prompts writes the bank's queries, and
    every slide's selection is the one those queries give."""
    import pandas as pd
    from test_workflow import MANIFEST, planned_jobs, snakemake, write_cohort

    from hwsi_model.data.stores.patch_embeddings import read_embeddings
    from hwsi_model.data.stores.selection import read_selection
    from hwsi_model.data.stores.tiles import read_tiles
    from hwsi_model.selection.select import select_patches
    from hwsi_model.selection.settings import SelectionConfig

    sheet = pd.read_csv(cohort / "samples.csv")
    rows = [f"{s},{cohort / p}," for s, p in zip(sheet.slide_id, sheet.path, strict=True)][:2]
    extra = (
        f"cells:\n  model: {trained[0]}\n  mpp: 0.5\n"
        f"embed:\n  encoder: clip\n  checkpoint: {tiny_clip}\n  num_workers: 0\n"
        "  selection:\n    n_candidates: 4\n    top_k: 2\n    query: prompts\n"
    )
    work = tmp_path / "wf"
    write_cohort(work, rows, extra_yaml=extra)
    proc = snakemake(work, venv_path_env, MANIFEST, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "out"
    queries = np.load(out / "selection_queries.npy")
    enc = load_encoder("clip", tiny_clip)
    expected = torch.nn.functional.normalize(enc.encode_text(list(DEFAULT_PROMPTS)), dim=-1)
    assert np.allclose(queries, expected.numpy(), atol=1e-5)
    cfg = SelectionConfig(n_candidates=4, top_k=2, query="prompts")
    for sid in sheet.slide_id[:2]:
        emb, _ = read_embeddings(out / "embeddings" / f"{sid}.zarr")
        tiles, _ = read_tiles(out / "tiles" / f"{sid}.zarr")
        want = select_patches(emb, tiles.region_offsets, cfg, queries)
        got = read_selection(out / "selection" / f"{sid}.csv", tiles.n_regions, 2)
        assert np.array_equal(got, want)
    # Another prompt bank re-embeds the queries and re-selects, nothing upstream.
    write_cohort(work, rows, extra_yaml=extra + "    prompts: [necrosis, mucin]\n")
    jobs = planned_jobs(snakemake(work, venv_path_env, MANIFEST, "-n").stdout)
    assert "embed_prompts" in {r for r, _ in jobs}
    assert "prepare_slide" not in {r for r, _ in jobs}
