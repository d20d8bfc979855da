"""The model folder: the one on-disk format of a trained (or stage-trained) MLLM-HWSI model.

A folder holds::

    config.json           HWSIConfig; llm_path / text_encoder_path relative when inside the folder
    model.safetensors     every weight that is not the LLM's or the text encoder's
    lora_adapter/         the LLM's LoRA adapter (peft), when LoRA is used
    llm/                  the full LLM + tokenizer, when saved with ``save_llm`` (LoRA merged)
    text_encoder/         the text encoder + tokenizer, when stage 1 fine-tuned it

The LLM and text encoder otherwise load from the folders the config names (local only). Saving is
atomic (a crash leaves the previous folder or none); loading checks that the weights match the
config, naming what is missing or extra.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file

from hwsi_model.atomic import atomic_output
from hwsi_model.model.configuration import HWSIConfig, LoraSettings
from hwsi_model.model.mllm import HWSIModel

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LORA_DIR = "lora_adapter"
LLM_DIR = "llm"
TEXT_ENCODER_DIR = "text_encoder"
#: Weights never stored in ``model.safetensors`` (they load from their own folders).
EXTERNAL_PREFIXES = ("llm.", "text_encoder.")


def _inside(path: str | None, folder: Path) -> str | None:
    """A relative path that exists inside the model folder (``llm/``) is taken from there."""
    if path is None:
        return None
    p = Path(path)
    return str(folder / p) if not p.is_absolute() and (folder / p).exists() else path


def read_config(directory: str | Path) -> HWSIConfig:
    """The folder's config, with ``llm_path`` / ``text_encoder_path`` resolved against it."""
    d = Path(directory)
    if not (d / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{d} is not a model folder (no {CONFIG_NAME})")
    config = HWSIConfig.load(d / CONFIG_NAME)
    config.llm_path = _inside(config.llm_path, d)
    config.text_encoder_path = _inside(config.text_encoder_path, d)
    return config


def save_model_folder(model: HWSIModel, directory: str | Path, save_llm: bool = False) -> None:
    """Write ``model`` as a model folder, atomically.

    With ``save_llm`` the LLM (fully fine-tuned, or a copy with its LoRA adapters merged) and its
    tokenizer go to ``llm/`` and the config points there; otherwise the config keeps
    ``llm_path`` and the adapters go to ``lora_adapter/``. A text encoder that was trained
    (``text_encoder.trainable``) is written to ``text_encoder/``.
    """
    config = copy.deepcopy(model.config)
    te = model.text_encoder
    with atomic_output(directory) as tmp:
        tmp.mkdir(parents=True)
        save_file(model.non_llm_state_dict(), str(tmp / WEIGHTS_NAME), {"format": "pt"})
        if model.is_lora and not save_llm:
            model.llm.save_pretrained(str(tmp / LORA_DIR))
        if save_llm and model.llm is not None:
            # Merge a copy, so that the model in memory keeps its adapters (one LLM's memory).
            llm = copy.deepcopy(model.llm).merge_and_unload() if model.is_lora else model.llm
            llm.save_pretrained(str(tmp / LLM_DIR))
            model.tokenizer.save_pretrained(str(tmp / LLM_DIR))
            config.llm_path, config.lora = LLM_DIR, None
        if te is not None and te.trainable:
            te.model.save_pretrained(str(tmp / TEXT_ENCODER_DIR))
            te.tokenizer.save_pretrained(str(tmp / TEXT_ENCODER_DIR))
            config.text_encoder_path = TEXT_ENCODER_DIR
        config.save(tmp / CONFIG_NAME)
    log.info("saved model folder %s", directory)


def load_model_folder(
    directory: str | Path,
    config: HWSIConfig | None = None,
    *,
    llm_path: str | None = None,
    text_encoder_path: str | None = None,
    load_llm: bool = True,
    load_text_encoder: bool = True,
    new_lora: LoraSettings | None = None,
    may_be_missing: Sequence[str] = (),
) -> HWSIModel:
    """Load a model folder written by :func:`save_model_folder`.

    Args:
        directory: the folder.
        config: the config to build from (default: :func:`read_config`); a caller that changes
            settings (loss weights, the baseline's ``visual_input``) passes its edited copy.
        llm_path, text_encoder_path: override the configured folders.
        load_llm, load_text_encoder: ``False`` builds the model without them (visual side only).
        new_lora: LoRA settings to add when the folder has no adapter (stage 3 with LoRA); a
            folder's own adapter is always loaded, trainable.
        may_be_missing: prefixes of weights that may be absent from the folder and start fresh
            (modules that a later training stage adds).

    Raises:
        ValueError: the weights do not match the config, or the config names a LoRA adapter
            that the folder lacks.
    """
    d = Path(directory)
    config = copy.deepcopy(config) if config is not None else read_config(d)
    config = dataclasses.replace(
        config,
        llm_path=(llm_path or config.llm_path) if load_llm else None,
        text_encoder_path=(text_encoder_path or config.text_encoder_path)
        if load_text_encoder
        else None,
    )
    folder_lora = config.lora is not None
    if folder_lora and config.llm_path and not (d / LORA_DIR).is_dir():
        raise ValueError(f"{d / CONFIG_NAME} names a LoRA adapter but {d / LORA_DIR} is missing")
    if not folder_lora:
        config.lora = new_lora
    model = HWSIModel.from_config(config, apply_lora=False)
    if model.llm is not None and folder_lora:
        from peft import PeftModel

        model.llm = PeftModel.from_pretrained(model.llm, str(d / LORA_DIR), is_trainable=True)
    elif model.llm is not None and new_lora is not None:
        model.apply_lora()
    missing, unexpected = model.load_state_dict(load_file(str(d / WEIGHTS_NAME)), strict=False)
    missing = [k for k in missing if not k.startswith(EXTERNAL_PREFIXES)]
    bad = [k for k in missing if not k.startswith(tuple(may_be_missing))]
    if bad or unexpected:
        raise ValueError(
            f"{d} does not match its config: missing {bad[:5]}, extra {unexpected[:5]}"
        )
    fresh = sorted({".".join(k.split(".")[:2]) for k in missing})
    if fresh:
        log.info("modules not in %s start fresh: %s", d, fresh)
    return model
