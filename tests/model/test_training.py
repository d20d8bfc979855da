"""Every stage's trainable modules get gradients (no dead path); losses fall on toy data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_helpers import make_slide, tiny_config, tiny_visual_config

from hwsi_model.model.batch import collate_slides
from hwsi_model.model.configuration import SCALES, ResamplerConfig
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.model.stages import configure_stage
from hwsi_model.model.text_views import split_report

REPORTS = [
    "The slide shows carcinoma. Large pleomorphic nuclei with coarse chromatin.",
    "Benign glands in stroma. Small round nuclei.",
    "Necrosis is present. Dense tumor cells with mitoses.",
]
QUESTIONS = ["what is the diagnosis ?", "describe the cells", "is necrosis present ?"]
ANSWERS = ["high grade carcinoma .", "small round nuclei", "yes"]


def gradient_check(model: HWSIModel, trainable: list[str], lora: bool = False) -> None:
    names = set(trainable)
    for name, p in model.named_parameters():
        if name not in names:
            assert p.grad is None, f"frozen {name} got a gradient"
            continue
        assert p.grad is not None, f"no gradient reaches {name}"
        if lora and "lora_A" in name:
            continue  # zero at initialisation, since lora_B starts at 0
        assert float(p.grad.abs().sum()) > 0, f"zero gradient for {name}"


def batch_and_views():
    slides = [
        make_slide(0, n_regions=3, empty_patches=1),  # an empty patch: the no-cells token
        make_slide(1, n_regions=1, k=2),  # one region
        make_slide(2, n_regions=2),
    ]
    return collate_slides(slides), [split_report(r) for r in REPORTS]


@pytest.fixture
def model(tiny_llm_dir: Path, tiny_text_encoder_dir: Path) -> HWSIModel:
    torch.manual_seed(0)
    cfg = tiny_config(
        llm_path=str(tiny_llm_dir),
        text_encoder_path=str(tiny_text_encoder_dir),
        resampler=ResamplerConfig(num_queries=2, num_heads=2),
    )
    return HWSIModel.from_config(cfg).train()


def test_stage1_gradients_reach_every_trainable_module(model: HWSIModel) -> None:
    trainable = configure_stage(model, 1)
    prefixes = {
        n.split(".")[0] + "." + n.split(".")[1] for n in trainable if n.startswith("visual")
    }
    assert prefixes == {
        "visual.ccaf",
        "visual.region_encoder",
        "visual.slide_encoder",
        "visual.align_projectors",
        "visual.text_projector",
    }
    assert "hc_align.log_logit_scale" in trainable
    batch, views = batch_and_views()
    out = model.alignment_losses(batch, views)
    assert set(out.hc_parts) == set(SCALES)
    out.loss.backward()
    gradient_check(model, trainable)
    assert bool((model.hc_align.log_logit_scale.grad != 0).all())  # one per scale


def test_stage2_gradients_reach_projectors_with_frozen_llm(model: HWSIModel) -> None:
    trainable = configure_stage(model, 2)
    assert not any(n.startswith(("llm.", "visual.ccaf", "visual.align")) for n in trainable)
    assert any(n.startswith("resamplers.") for n in trainable)
    batch, views = batch_and_views()
    out = model(batch, **model.processor(QUESTIONS, ANSWERS), views=views)
    assert out.lm_loss is not None and out.hc_loss is not None and out.cs_loss is not None
    out.loss.backward()
    gradient_check(model, trainable)
    # The scale-type embedding of every scale and each stage-2 temperature receive gradient.
    assert bool((model.visual.llm_projectors.scale_embedding.grad.abs().sum(1) > 0).all())
    assert bool((model.hc_llm.log_logit_scale.grad != 0).all())


def test_stage2_auxiliary_losses_alone_have_a_trainable_path(model: HWSIModel) -> None:
    trainable = configure_stage(model, 2)
    batch, views = batch_and_views()
    out = model(batch, **model.processor(QUESTIONS), views=views)  # no labels: L_HC + L_CS only
    assert out.lm_loss is None
    out.loss.backward()
    for scale in SCALES:
        grads = [
            p.grad for n, p in model.named_parameters() if f"llm_projectors.projectors.{scale}" in n
        ]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads), scale
    assert trainable


def test_stage3_full_gradients_reach_the_llm(model: HWSIModel) -> None:
    trainable = configure_stage(model, 3)
    assert any(n.startswith("llm.") for n in trainable)
    batch, views = batch_and_views()
    out = model(batch, **model.processor(QUESTIONS, ANSWERS), views=views)
    out.loss.backward()
    gradient_check(model, trainable)


def test_stage3_lora_gradients(tiny_llm_dir: Path) -> None:
    pytest.importorskip("peft", reason="peft is not installed (LoRA is optional)")
    from hwsi_model.model.configuration import LoraSettings

    torch.manual_seed(0)
    model = HWSIModel.from_config(
        tiny_config(llm_path=str(tiny_llm_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    ).train()
    trainable = configure_stage(model, 3)
    batch, views = batch_and_views()
    model(batch, **model.processor(QUESTIONS, ANSWERS), views=views).loss.backward()
    gradient_check(model, trainable, lora=True)


def toy_alignment_data(n: int = 4, text_dim: int = 8):
    """n slides with distinct patch/cell prototypes; per scale distinct random text units."""
    g = torch.Generator().manual_seed(0)
    slides = []
    for i in range(n):
        s = make_slide(10 + i, n_regions=2, k=2, max_cells=3)
        proto_p = torch.randn(s.patch_emb.shape[1], generator=g) * 2
        proto_c = torch.randn(s.cell_emb.shape[1], generator=g) * 2
        s.patch_emb = (s.patch_emb.float() * 0.3 + proto_p).half()
        s.cell_emb = (s.cell_emb.float() * 0.3 + proto_c).half()
        slides.append(s)
    text = {}
    for scale in SCALES:
        t = 1 if scale == "wsi" else 3
        text[scale] = UnitEmbeddings(
            torch.randn(n, t, text_dim, generator=g), torch.ones(n, t, dtype=torch.bool)
        )
    return collate_slides(slides), text


def test_stage1_losses_fall_on_separable_toy_pairs() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.visual.projector.text_dim = 8
    model = HWSIModel(cfg).train()
    trainable = configure_stage(model, 1)
    params = [p for n, p in model.named_parameters() if n in set(trainable)]
    opt = torch.optim.Adam(params, lr=3e-3)
    batch, text = toy_alignment_data()
    history = []
    for _ in range(30):
        out = model.alignment_losses(batch, text=text)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append((out.hc_loss.item(), out.cs_loss.item()))
    (hc0, cs0), (hc1, cs1) = history[0], history[-1]
    assert hc1 < 0.5 * hc0, history
    assert cs1 < cs0, history
    model.eval()
    with torch.no_grad():
        matched = model.alignment_losses(batch, text=text)
        perm = [1, 2, 3, 0]
        shuffled = {s: UnitEmbeddings(u.emb[perm], u.mask[perm]) for s, u in text.items()}
        mismatched = model.alignment_losses(batch, text=shuffled)
    for scale in SCALES:
        assert matched.hc_parts[scale] < mismatched.hc_parts[scale], scale


def test_stage2_lm_loss_falls_with_a_frozen_llm(tiny_llm_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(llm_path=str(tiny_llm_dir), visual=tiny_visual_config())
    cfg.loss.hc_weight = cfg.loss.cs_weight = 0.0
    model = HWSIModel.from_config(cfg).train()
    trainable = configure_stage(model, 2)
    params = [p for n, p in model.named_parameters() if n in set(trainable)]
    opt = torch.optim.Adam(params, lr=1e-2)
    batch, _ = batch_and_views()
    enc = model.processor(QUESTIONS, ANSWERS)
    losses = []
    for _ in range(20):
        out = model(batch, **enc)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.lm_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_llm_gradient_checkpointing_gives_the_same_loss_and_gradients(
    tiny_llm_dir: Path, tuning: str
) -> None:
    """Stage 3 with the LLM's layers recomputed in the backward pass: same loss and gradients
    as without (LoRA and full tuning); the setting reaches the decoder layers, and the
    default (``None``) is off without CUDA."""
    pytest.importorskip("peft", reason="peft is not installed (LoRA is optional)")
    from hwsi_model.model.configuration import LoraSettings
    from hwsi_model.training.stage_config import StageConfig
    from hwsi_model.training.stage_model import configure_trainable, llm_gradient_checkpointing

    def run(checkpointing: bool):
        torch.manual_seed(0)
        lora = LoraSettings(r=4, alpha=8, dropout=0.0) if tuning == "lora" else None
        model = HWSIModel.from_config(tiny_config(llm_path=str(tiny_llm_dir), lora=lora)).train()
        cfg = StageConfig(stage=3, llm_tuning=tuning, llm_gradient_checkpointing=checkpointing)
        trainable = configure_trainable(model, cfg)
        base = model.llm.get_base_model() if model.is_lora else model.llm
        flags = [
            m.gradient_checkpointing for m in base.modules() if hasattr(m, "gradient_checkpointing")
        ]
        assert flags and all(f == checkpointing for f in flags)
        batch, views = batch_and_views()
        loss = model(batch, **model.processor(QUESTIONS, ANSWERS), views=views).loss
        loss.backward()
        gradient_check(model, trainable, lora=tuning == "lora")
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return float(loss), grads

    loss_off, grads_off = run(False)
    loss_on, grads_on = run(True)
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    assert grads_on.keys() == grads_off.keys()
    for name, g in grads_off.items():
        torch.testing.assert_close(grads_on[name], g, rtol=1e-4, atol=1e-6, msg=name)
    if not torch.cuda.is_available():
        assert llm_gradient_checkpointing(StageConfig(stage=3)) is False
