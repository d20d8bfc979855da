"""Build the model a stage starts from, set what it trains, and write the final model folder.

- Stage 1 starts from an :class:`~hwsi_model.model.config.HWSIConfig` (fresh weights; the input
  widths come from the cache) or from a previous model folder. The LLM is not loaded in stage 1:
  its path stays in the config for stage 2.
- Stages 2 and 3 start from the previous stage's folder (:func:`load_stage_model`); modules that
  a stage-1 folder does not hold yet (LLM projectors, resamplers, stage-2/3 temperatures) start
  fresh. Stage 3 with ``llm_tuning="lora"`` adds LoRA adapters (or keeps the folder's own).
- :func:`save_model_folder` writes one self-contained folder: ``config.json``,
  ``model.safetensors`` (non-LLM weights), ``lora_adapter/`` or the merged ``llm/``, and
  ``text_encoder/`` when stage 1 trained the text encoder.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from safetensors.torch import load_file

from hwsi_model.atomic import atomic_output
from hwsi_model.model.config import HWSIConfig, LoraSettings
from hwsi_model.model.mllm import CONFIG_NAME, LORA_DIR, WEIGHTS_NAME, HWSIModel
from hwsi_model.model.stages import configure_stage
from hwsi_model.training.config import StageConfig

log = logging.getLogger(__name__)

TEXT_ENCODER_DIR = "text_encoder"
#: Weights a stage may find missing in the previous stage's folder (they start fresh).
NEW_IN_LATER_STAGES = (
    "llm.",
    "text_encoder.",
    "visual.llm_projectors.",
    "resamplers.",
    "hc_llm.",
    "flat_projector.",
)


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path)
    return str(base / p) if not p.is_absolute() and (base / p).exists() else path


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
    config = HWSIConfig.load(d / CONFIG_NAME)
    _apply_loss_overrides(config, cfg)
    if cfg.visual_input is not None:
        config.visual_input = cfg.visual_input  # a baseline started from the method's folder
        HWSIConfig.__post_init__(config)
    config.text_encoder_path = text_encoder_path or _resolve(config.text_encoder_path, d)
    config.llm_path = llm_path or _resolve(config.llm_path, d)
    if cfg.stage == 1:
        kept_llm, config.llm_path = config.llm_path, None
    elif not config.llm_path:
        raise ValueError(f"stage {cfg.stage} needs an LLM: pass llm_path or set it in {d}")
    folder_lora = config.lora is not None and (d / LORA_DIR).is_dir()
    want_lora = cfg.stage == 3 and cfg.llm_tuning == "lora"
    if want_lora and not folder_lora:
        config.lora = _lora_settings(cfg)
    elif not folder_lora:
        config.lora = None
    model = HWSIModel.from_config(config, apply_lora=False)
    if folder_lora and model.llm is not None:
        from peft import PeftModel

        model.llm = PeftModel.from_pretrained(model.llm, str(d / LORA_DIR), is_trainable=True)
    elif want_lora:
        model.apply_lora()
    missing, unexpected = model.load_state_dict(load_file(str(d / WEIGHTS_NAME)), strict=False)
    bad = [k for k in missing if not k.startswith(NEW_IN_LATER_STAGES)]
    if bad or unexpected:
        raise ValueError(
            f"{d} does not match its config: missing {bad[:5]}, extra {unexpected[:5]}"
        )
    fresh = sorted(
        {
            k.split(".")[0] + "." + k.split(".")[1]
            for k in missing
            if not k.startswith(("llm.", "text_encoder."))
        }
    )
    if fresh:
        log.info("stage %d: modules new to this stage start fresh: %s", cfg.stage, fresh)
    if cfg.stage == 1:
        model.config.llm_path = kept_llm
    log.info("loaded stage-%d model from %s", cfg.stage, d)
    return model


def configure_trainable(model: HWSIModel, cfg: StageConfig) -> list[str]:
    """Freeze/unfreeze for ``cfg.stage`` (:func:`configure_stage`), plus the text encoder's top
    layers in stage 1 when ``cfg.text_encoder_top_layers > 0``. Returns the trainable names."""
    te = model.text_encoder
    if te is not None:
        te.trainable = cfg.stage == 1 and cfg.text_encoder_top_layers > 0
    names = configure_stage(model, cfg.stage)
    if te is not None and te.trainable:
        layers = _encoder_layers(te.model)
        keep = {
            id(p) for layer in layers[-cfg.text_encoder_top_layers :] for p in layer.parameters()
        }
        for p in te.parameters():
            p.requires_grad_(id(p) in keep)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    return names


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


def save_model_folder(model: HWSIModel, directory: str | Path, save_llm: bool = False) -> None:
    """Write the self-contained model folder atomically (see the module docstring)."""
    te = model.text_encoder
    with atomic_output(directory) as tmp:
        model.save_pretrained(tmp, save_llm=save_llm)
        if te is not None and te.trainable:
            te.model.save_pretrained(str(tmp / TEXT_ENCODER_DIR))
            te.tokenizer.save_pretrained(str(tmp / TEXT_ENCODER_DIR))
            cfg_path = tmp / CONFIG_NAME
            data = json.loads(cfg_path.read_text())
            data["text_encoder_path"] = TEXT_ENCODER_DIR
            cfg_path.write_text(json.dumps(data, indent=2) + "\n")
