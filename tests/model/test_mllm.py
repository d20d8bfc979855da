"""The LLM wrapper: prompts and labels, visual tokens at the placeholder, generation, save/load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from model_helpers import make_slide, tiny_config

from hwsi_model.model.batch import collate_slides
from hwsi_model.model.checkpoint import load_model_folder, save_model_folder
from hwsi_model.model.configuration import LoraSettings, ResamplerConfig
from hwsi_model.model.mllm import HWSIModel, plan_visual_tokens
from hwsi_model.model.stages import configure_stage
from hwsi_model.model.text_views import split_report

QUESTIONS = ["what is the diagnosis ?", "describe the cells"]
ANSWERS = ["high grade carcinoma .", "large pleomorphic nuclei"]
REPORTS = [
    "The slide shows carcinoma. Large pleomorphic nuclei with coarse chromatin.",
    "Benign glands in stroma. Small round nuclei.",
]


def build(llm_dir: Path, text_dir: Path | None = None, **kw) -> HWSIModel:
    torch.manual_seed(0)
    cfg = tiny_config(
        llm_path=str(llm_dir), text_encoder_path=str(text_dir) if text_dir else None, **kw
    )
    return HWSIModel.from_config(cfg).eval()


def slides():
    return collate_slides([make_slide(0, empty_patches=1), make_slide(1, n_regions=1, k=2)])


def test_tokenize_labels_only_the_answer(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir)
    tok = model.tokenizer
    enc = model.processor(QUESTIONS, ANSWERS)
    for b in range(2):
        ids, labels = enc["input_ids"][b], enc["labels"][b]
        keep = enc["attention_mask"][b].bool()
        supervised = labels[labels != -100]
        assert supervised[-1] == tok.eos_token_id
        assert tok.decode(supervised[:-1]) == ANSWERS[b]
        assert int((ids[keep] == model.processor.placeholder_id).sum()) == 1
        # Labels sit exactly on the last tokens of the sequence (the answer).
        n = len(supervised)
        assert torch.equal(ids[keep][-n:], supervised)
    assert "labels" not in model.processor(QUESTIONS)


def test_lm_loss_is_the_cross_entropy_of_answer_tokens_only(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir)
    batch = slides()
    enc = model.processor(QUESTIONS, ANSWERS)
    out = model(batch, **enc)
    n_visual = [len(v) for v in model.visual_tokens(model.visual(batch))]
    n_text = enc["attention_mask"].sum(1)
    for b in range(2):
        # One placeholder became n_visual tokens; padding is on the right.
        assert int(out.attention_mask[b].sum()) == int(n_text[b]) - 1 + n_visual[b]
    n_answer = (enc["labels"] != -100).sum()
    assert int((out.labels != -100).sum()) == int(n_answer)
    # Manual cross-entropy over the answer positions only.
    terms = []
    for b, t in (out.labels != -100).nonzero().tolist():
        logp = torch.log_softmax(out.logits[b, t - 1].float(), dim=-1)
        terms.append(-logp[out.labels[b, t]])
    torch.testing.assert_close(out.lm_loss, torch.stack(terms).mean())
    assert out.hc_loss is None and torch.equal(out.loss, out.lm_loss)


def test_visual_tokens_reach_the_llm(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir)
    enc = model.processor(QUESTIONS[:1], ANSWERS[:1])
    a = model(collate_slides([make_slide(0)]), **enc).logits[0, -1]
    b = model(collate_slides([make_slide(5)]), **enc).logits[0, -1]
    assert not torch.allclose(a, b, atol=1e-4)


def test_generate_with_visual_tokens_batched_equals_single(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir)
    batch = slides()
    both = model.generate(batch, QUESTIONS, max_new_tokens=6)
    assert len(both) == 2 and all(isinstance(a, str) for a in both)
    single = model.generate(collate_slides([make_slide(1, n_regions=1, k=2)]), QUESTIONS[1:], 6)
    assert both[1] == single[0]  # left padding of a longer neighbour does not change the answer
    assert model.generate(batch, QUESTIONS, max_new_tokens=6) == both  # deterministic


def test_plan_visual_tokens_respects_the_cap() -> None:
    region_mask = torch.tensor([True] * 6 + [False] * 2)
    patch_mask = torch.zeros(8, 4, dtype=torch.bool)
    patch_mask[:6, :3] = True
    patch_mask[0, 3] = True
    scales = ["wsi", "region", "patch", "cell"]
    regions, slots = plan_visual_tokens(region_mask, patch_mask, scales, cap=100)
    assert len(regions) == 6 and len(slots) == 19  # everything fits
    # Budget 12 after the WSI: 4 regions (a third, evenly spaced), 4 patch + 4 cell tokens.
    regions, slots = plan_visual_tokens(region_mask, patch_mask, scales, cap=13)
    assert regions.tolist() == [0, 2, 3, 5]
    assert slots.tolist() == [0, 4, 8, 12]  # rank 0 (best patch) of regions 0-3 first
    # Budget 15: regions take what the pairs leave (5 + 2 * 5).
    regions, slots = plan_visual_tokens(region_mask, patch_mask, scales, cap=16)
    assert len(regions) == 5 and len(slots) == 5 and bool((slots % 4 == 0).all())
    regions, slots = plan_visual_tokens(region_mask, patch_mask, ["wsi", "region"], cap=4)
    assert len(regions) == 3 and len(slots) == 0


def test_model_caps_visual_tokens_and_puts_the_wsi_first(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir, max_visual_tokens=8)
    out = model.visual(slides())
    tokens = model.visual_tokens(out)
    assert [len(t) for t in tokens] == [8, 1 + 1 + 2 * 2]
    proj = model.visual.llm_projectors
    wsi = proj("wsi", out.wsi_token, add_scale_embedding=True)
    torch.testing.assert_close(tokens[0][0], wsi[0])


def test_resampler_gives_a_fixed_number_of_tokens(tiny_llm_dir: Path) -> None:
    model = build(tiny_llm_dir, resampler=ResamplerConfig(num_queries=3, num_heads=2))
    tokens = model.visual_tokens(model.visual(slides()))
    assert [len(t) for t in tokens] == [1 + 3 * 3, 1 + 3 * 3]
    enc = model.processor(QUESTIONS, ANSWERS)
    assert torch.isfinite(model(slides(), **enc).loss)


def test_save_load_round_trip(tiny_llm_dir: Path, tiny_text_encoder_dir: Path, tmp_path: Path):
    model = build(
        tiny_llm_dir, tiny_text_encoder_dir, resampler=ResamplerConfig(num_queries=2, num_heads=2)
    )
    batch = slides()
    views = [split_report(r) for r in REPORTS]
    enc = model.processor(QUESTIONS, ANSWERS)
    ref = model(batch, **enc, views=views)
    ref_align = model.alignment_losses(batch, views)
    save_model_folder(model, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model_folder(tmp_path / "model").eval()
    out = loaded(batch, **enc, views=views)
    torch.testing.assert_close(out.logits, ref.logits, atol=0, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=0, rtol=0)
    torch.testing.assert_close(loaded.alignment_losses(batch, views).loss, ref_align.loss)
    # The visual side alone (no LLM, no text encoder) loads from the same folder.
    visual_only = load_model_folder(tmp_path / "model", load_llm=False, load_text_encoder=False)
    assert visual_only.llm is None
    torch.testing.assert_close(
        visual_only.eval().visual(batch).wsi_token, model.visual(batch).wsi_token
    )


def test_lora_trains_adapters_only_and_round_trips(tiny_llm_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft is not installed (LoRA is optional)")
    model = build(tiny_llm_dir, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    assert model.is_lora
    names = configure_stage(model, 3)
    llm_names = [n for n in names if n.startswith("llm.")]
    assert llm_names and all("lora_" in n for n in llm_names)
    assert any(n.startswith("visual.llm_projectors") for n in names)
    with torch.no_grad():  # make the adapters non-trivial
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    batch = slides()
    enc = model.processor(QUESTIONS, ANSWERS)
    ref = model(batch, **enc).logits
    save_model_folder(model, tmp_path / "m")
    assert (tmp_path / "m" / "lora_adapter").is_dir()
    loaded = load_model_folder(tmp_path / "m").eval()
    torch.testing.assert_close(loaded(batch, **enc).logits, ref)
    # Merged into a full LLM folder: the same outputs without peft at load time.
    save_model_folder(model, tmp_path / "merged", save_llm=True)
    merged = load_model_folder(tmp_path / "merged").eval()
    assert not merged.is_lora
    assert not (tmp_path / "merged" / "lora_adapter").exists()  # merged, not applied twice
    torch.testing.assert_close(merged(batch, **enc).logits, ref, atol=1e-4, rtol=1e-4)
    assert model.is_lora  # saving merged a copy, not the model itself
    torch.testing.assert_close(model(batch, **enc).logits, ref)
    # A folder whose config names an adapter it does not hold is refused, not loaded bare.
    shutil.rmtree(tmp_path / "m" / "lora_adapter")
    with pytest.raises(ValueError, match="LoRA adapter"):
        load_model_folder(tmp_path / "m")
