"""Build the model a stage starts from and set what it trains.

- Stage 1 starts from an :class:`~hwsi_model.model.configuration.HWSIConfig` (fresh weights;
  the input widths come from the cache) or from a previous model folder. The LLM is not loaded
  in stage 1: its path stays in the config for stage 2.
- Stages 2 and 3 start from the previous stage's folder (:func:`load_stage_model`); modules that
  a stage-1 folder does not hold yet (LLM projectors, resamplers, stage-2/3 temperatures) start
  fresh. Stage 3 with ``llm_tuning="lora"`` adds LoRA adapters (or keeps the folder's own).

The folder format itself is :mod:`hwsi_model.model.checkpoint`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from hwsi_model.devices import PRECISION_DTYPES
from hwsi_model.model.checkpoint import load_model_folder, read_config
from hwsi_model.model.configuration import HWSIConfig, LoraSettings
from hwsi_model.model.mllm import HWSIModel
from hwsi_model.model.stages import configure_stage
from hwsi_model.training.stage_config import StageConfig

log = logging.getLogger(__name__)

#: Weights a stage may find missing in the previous stage's folder (they start fresh).
NEW_IN_LATER_STAGES = (
    "visual.llm_projectors.",
    "resamplers.",
    "hc_llm.",
    "flat_projector.",
)


def _lora_settings(cfg: StageConfig) -> LoraSettings:
    return LoraSettings(
        r=cfg.lora_r,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
    )


def _apply_loss_overrides(config: HWSIConfig, cfg: StageConfig) -> None:
    for name in ("lm_weight", "hc_weight", "cs_weight"):
        value = getattr(cfg, name)
        if value is not None:
            setattr(config.loss, name, float(value))


def new_stage1_model(
    config: HWSIConfig,
    cfg: StageConfig,
    patch_dim: int,
    cell_dim: int,
    region_size: int | None = None,
) -> HWSIModel:
    """A fresh model for stage 1 (no LLM loaded); input widths and region side from the cache."""
    config = copy.deepcopy(config)
    config.visual.patch_dim, config.visual.cell_dim = patch_dim, cell_dim
    if region_size is not None:
        config.visual.region.region_size = region_size
    _apply_loss_overrides(config, cfg)
    if not config.text_encoder_path:
        raise ValueError("stage 1 needs a text encoder (config text_encoder_path)")
    llm_path = config.llm_path
    config.llm_path = None
    model = HWSIModel.from_config(config, apply_lora=False)
    model.config.llm_path = llm_path  # kept for stage 2
    return model


def load_stage_model(
    init_dir: str | Path,
    cfg: StageConfig,
    llm_path: str | None = None,
    text_encoder_path: str | None = None,
) -> HWSIModel:
    """The previous stage's folder, loaded for ``cfg.stage`` (see the module docstring)."""
    d = Path(init_dir)
    config = read_config(d)
    _apply_loss_overrides(config, cfg)
    if cfg.visual_input is not None:  # a baseline started from the method's folder
        config = dataclasses.replace(config, visual_input=cfg.visual_input)
    llm_path = llm_path or config.llm_path
    if cfg.stage > 1 and not llm_path:
        raise ValueError(f"stage {cfg.stage} needs an LLM: pass llm_path or set it in {d}")
    want_lora = cfg.stage == 3 and cfg.llm_tuning == "lora"
    dtype = config.llm_dtype
    if dtype == "auto":  # train in the stage's precision; the folder keeps "auto" for inference
        config = dataclasses.replace(config, llm_dtype=PRECISION_DTYPES[cfg.precision])
    model = load_model_folder(
        d,
        config,
        llm_path=llm_path,
        text_encoder_path=text_encoder_path,
        load_llm=cfg.stage > 1,
        new_lora=_lora_settings(cfg) if want_lora else None,
        may_be_missing=NEW_IN_LATER_STAGES,
    )
    if cfg.stage == 1:
        model.config.llm_path = llm_path  # kept for stage 2
    model.config.llm_dtype = dtype
    log.info("loaded stage-%d model from %s", cfg.stage, d)
    return model


def configure_trainable(model: HWSIModel, cfg: StageConfig) -> list[str]:
    """Freeze/unfreeze for ``cfg.stage`` (:func:`configure_stage`), plus the text encoder's top
    layers in stage 1 when ``cfg.text_encoder_top_layers > 0``; the LLM's gradient
    checkpointing in stages 2-3 (:func:`llm_gradient_checkpointing`). Returns the trainable
    names."""
    te = model.text_encoder
    if te is not None:
        te.trainable = cfg.stage == 1 and cfg.text_encoder_top_layers > 0
    names = configure_stage(model, cfg.stage)
    if cfg.stage > 1:
        model.set_llm_gradient_checkpointing(llm_gradient_checkpointing(cfg))
    if te is not None and te.trainable:
        layers = _encoder_layers(te.model)
        keep = {
            id(p) for layer in layers[-cfg.text_encoder_top_layers :] for p in layer.parameters()
        }
        for p in te.parameters():
            p.requires_grad_(id(p) in keep)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    return names


def llm_gradient_checkpointing(cfg: StageConfig) -> bool:
    """The stage's ``llm_gradient_checkpointing``, ``None`` resolved: on with CUDA."""
    if cfg.llm_gradient_checkpointing is not None:
        return cfg.llm_gradient_checkpointing
    import torch

    return torch.cuda.is_available()


def _encoder_layers(module):
    """The list of transformer layers of a Hugging Face encoder (BERT-like ``encoder.layer``)."""
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        obj = module
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ValueError("cannot find the text encoder's transformer layers")
