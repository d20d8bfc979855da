"""Which parameters train in each of the three stages.

=====  ==============================================================  ==================
stage  trainable                                                       losses
=====  ==============================================================  ==================
1      CCAF, region + slide encoders, alignment projectors, text       L_HC + L_CS
       projector, stage-1 temperatures (text encoder if ``trainable``)  (alignment space)
2      LLM projectors (+ scale-type embedding), resamplers,             L_LM (+ L_HC, L_CS
       stage-2/3 temperatures; the LLM is frozen                         in LLM space)
3      as stage 2 + the LLM (its LoRA adapters when LoRA is applied,   as stage 2
       otherwise all its weights)
=====  ==============================================================  ==================

The baselines (``config.visual_input``) train their flat projector (``"flat"``,
``"flat_cells"``) or nothing but the LLM (``"none"``, stage 3 only) in stages 2-3.
"""

from __future__ import annotations

import logging

from torch import nn

from hwsi_model.model.mllm import HWSIModel

log = logging.getLogger(__name__)


def stage_modules(model: HWSIModel, stage: int) -> dict[str, nn.Module]:
    """The modules (by name) trained in ``stage``; :func:`configure_stage` handles the LLM."""
    v = model.visual
    if stage == 1:
        mods: dict[str, nn.Module] = {
            "ccaf": v.ccaf,
            "region_encoder": v.region_encoder,
            "slide_encoder": v.slide_encoder,
            "align_projectors": v.align_projectors,
            "hc_align": model.hc_align,
        }
        if v.text_projector is not None:
            mods["text_projector"] = v.text_projector
        if model.text_encoder is not None and model.text_encoder.trainable:
            mods["text_encoder"] = model.text_encoder
        return mods
    if stage in (2, 3) and model.config.visual_input != "hierarchy":
        # Baselines: the flat projector, or nothing besides the LLM (text only).
        fp = model.flat_projector
        return {"flat_projector": fp} if fp is not None else {}
    if stage in (2, 3):
        if v.llm_projectors is None:
            raise RuntimeError(f"stage {stage} needs LLM projectors (an LLM)")
        mods = {"llm_projectors": v.llm_projectors, "hc_llm": model.hc_llm}
        if model.resamplers is not None:
            mods["resamplers"] = model.resamplers
        return mods
    raise ValueError(f"stage must be 1, 2 or 3, got {stage}")


def configure_stage(model: HWSIModel, stage: int) -> list[str]:
    """Freeze everything, then unfreeze what ``stage`` trains; return the trainable names.

    The learnable temperatures stay frozen when ``config.loss.learnable_temperature`` is False.
    In stage 3 the LLM trains through its LoRA adapters when LoRA is applied, else fully.
    """
    model.requires_grad_(False)
    for module in stage_modules(model, stage).values():
        module.requires_grad_(True)
    if not model.config.loss.learnable_temperature:
        model.hc_align.log_logit_scale.requires_grad_(False)
        model.hc_llm.log_logit_scale.requires_grad_(False)
    if stage == 3:
        if model.llm is None:
            raise RuntimeError("stage 3 needs an LLM")
        if model.is_lora:
            for name, p in model.llm.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            model.llm.requires_grad_(True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("stage %d: %d trainable tensors, %d parameters", stage, len(names), n_params)
    return names
