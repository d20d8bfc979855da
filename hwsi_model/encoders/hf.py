"""Hugging Face vision encoders from a local folder (``AutoModel``, no image processor object).

Preprocessing is done on the device by :meth:`PatchEncoder.preprocess`; the folder's
``preprocessor_config.json`` is only read for the input size, resize/crop, kernel and mean/std.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hwsi_model.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderNotAvailableError,
    PatchEncoder,
    checkpoint_hash,
    tokens_to_grid,
)
from hwsi_model.encoders.specs import EncoderSpec

log = logging.getLogger(__name__)

HF_POOLINGS = ("cls", "pooler", "cls+mean", "mean")
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def _side(value: Any) -> int | None:
    """A square side from an image-processor size entry (int, or dict of height/shortest_edge)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


def read_preprocessing(folder: Path, config: Any) -> dict[str, Any]:
    """Input size, resize side, kernel and mean/std of a model folder.

    From ``preprocessor_config.json`` when present (``size``/``crop_size``/``do_center_crop``,
    ``resample``, ``image_mean``/``image_std``), else ``config.image_size`` and ImageNet values.
    """
    pp: dict[str, Any] = {}
    f = folder / "preprocessor_config.json"
    if f.is_file():
        pp = json.loads(f.read_text())
    resize = _side(pp.get("size"))
    crop = _side(pp.get("crop_size")) if pp.get("do_center_crop") else None
    image_size = _side(getattr(config, "image_size", None))
    input_size = crop or resize or image_size
    if input_size is None:
        raise EncoderNotAvailableError(f"{folder}: cannot tell the model's input size")
    return {
        "input_size": input_size,
        "resize_size": max(resize or input_size, input_size) if crop else input_size,
        "interpolation": _PIL_RESAMPLE.get(pp.get("resample"), "bilinear"),
        "mean": tuple(pp.get("image_mean", IMAGENET_MEAN)),
        "std": tuple(pp.get("image_std", IMAGENET_STD)),
    }


class HFPatchEncoder(PatchEncoder):
    """A transformers ViT-like model (``last_hidden_state`` = ``[CLS, registers..., patches]``).

    Args:
        model: the loaded ``PreTrainedModel`` (vision part).
        pooling: ``"cls"`` (final-normed CLS), ``"pooler"`` (``pooler_output``), ``"cls+mean"``
            (CLS concatenated with the mean patch token) or ``"mean"`` (mean patch token).
        **kw: the remaining :class:`PatchEncoder` fields.
    """

    def __init__(self, model: nn.Module, *, name: str, pooling: str = "cls", **kw: Any):
        if pooling not in HF_POOLINGS:
            raise ValueError(f"pooling must be one of {HF_POOLINGS}, got {pooling!r}")
        cfg = model.config
        hidden = int(cfg.hidden_size)
        patch = getattr(cfg, "patch_size", None)
        if not isinstance(patch, int):
            raise EncoderNotAvailableError(
                f"{name}: {type(model).__name__} has no square patch_size; only ViT-like models "
                "(ViT, DINOv2, ...) are supported by the 'hf' family"
            )
        embed = 2 * hidden if pooling == "cls+mean" else hidden
        super().__init__(name=name, embed_dim=embed, token_dim=hidden, **kw)
        self.model = model
        self.pooling = pooling
        self.patch_size = patch
        self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        native = _side(getattr(cfg, "image_size", None))
        self._fwd_kw = (
            {"interpolate_pos_encoding": True} if accepts and native != self.input_size else {}
        )

    def forward_with_tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 3, S, S]`` -> (``[B, D]``, ``[B, S/p, S/p, hidden]``)."""
        out = self.model(pixel_values=x, **self._fwd_kw)
        hidden = out.last_hidden_state
        patches = hidden[:, self.num_prefix_tokens :]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "mean":
            pooled = patches.mean(dim=1)
        else:
            pooled = torch.cat([hidden[:, 0], patches.mean(dim=1)], dim=-1)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return pooled, tokens_to_grid(patches, h, w)


def hf_weight_files(folder: Path) -> list[Path]:
    """The weight files transformers loads from ``folder``: safetensors when any, else pickles."""
    safe = sorted(folder.glob("*.safetensors"))
    return safe or sorted(f for f in folder.iterdir() if f.suffix in (".bin", ".pt", ".pth"))


def load_hf_encoder(spec: EncoderSpec, folder: Path) -> HFPatchEncoder:
    """Load the transformers model in ``folder`` (``local_files_only``, float32, eval)."""
    from transformers import AutoModel

    if not (folder / "config.json").is_file():
        raise EncoderNotAvailableError(
            f"encoder {spec.name!r}: {folder} is not a Hugging Face model folder (no config.json)"
        )
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise EncoderNotAvailableError(f"encoder {spec.name!r}: cannot load {folder}: {e}") from e
    if hasattr(model, "vision_model") and not hasattr(model.config, "patch_size"):
        model = model.vision_model  # composite image-text model: keep the vision tower
    pp = read_preprocessing(folder, model.config)
    if spec.input_size:
        pp["input_size"] = pp["resize_size"] = spec.input_size
    if spec.mean is not None and spec.std is not None:
        pp["mean"], pp["std"] = spec.mean, spec.std
    enc = HFPatchEncoder(
        model,
        name=spec.name,
        pooling=spec.pooling if spec.pooling in HF_POOLINGS else "cls",
        checkpoint_hash=checkpoint_hash(hf_weight_files(folder)),
        precision=spec.precision,
        **pp,
    )
    log.info(
        "encoder %s: %s from %s (D=%d, %d px, hash %s)",
        spec.name,
        type(model).__name__,
        folder,
        enc.embed_dim,
        enc.input_size,
        enc.checkpoint_hash,
    )
    return enc


class CLIPPatchEncoder(HFPatchEncoder):
    """A transformers ``CLIPModel`` (OpenAI CLIP, PLIP, QuiltNet in transformers form): the
    pooled embedding ``[B, projection_dim]`` is the image embedding of the shared image-text
    space (the vision tower's pooled output through ``visual_projection``), the token map the
    vision tower's patch tokens, and :meth:`encode_text` embeds text into the same space."""

    has_text_tower = True

    def __init__(self, clip: nn.Module, tokenizer: Any, **kw: Any):
        super().__init__(clip.vision_model, pooling="pooler", **kw)
        self.embed_dim = int(clip.config.projection_dim)
        self.visual_projection = clip.visual_projection
        self.text_model = clip.text_model
        self.text_projection = clip.text_projection
        self.tokenizer = tokenizer
        self.max_text_tokens = int(clip.config.text_config.max_position_embeddings)

    def forward_with_tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 3, S, S]`` -> (``[B, projection_dim]``, ``[B, S/p, S/p, hidden]``)."""
        pooled, tokens = super().forward_with_tokens(x)
        return self.visual_projection(pooled), tokens

    @torch.no_grad()
    def encode_text(self, texts: Any) -> Tensor:
        """``Q`` texts -> ``[Q, projection_dim]`` (the text tower's pooled output through
        ``text_projection``; not normalised)."""
        device = self.text_projection.weight.device
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens,
            return_tensors="pt",
        )  # fmt: skip
        out = self.text_model(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
        )
        return self.text_projection(out.pooler_output)


def load_clip_encoder(spec: EncoderSpec, folder: Path) -> CLIPPatchEncoder:
    """Load the ``CLIPModel`` and its tokenizer in ``folder`` (``local_files_only``, float32)."""
    from transformers import AutoTokenizer, CLIPModel

    if not (folder / "config.json").is_file():
        raise EncoderNotAvailableError(
            f"encoder {spec.name!r}: {folder} is not a Hugging Face model folder (no config.json)"
        )
    try:
        clip = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise EncoderNotAvailableError(
            f"encoder {spec.name!r}: cannot load a CLIPModel and its tokenizer from {folder}: {e}"
        ) from e
    pp = read_preprocessing(folder, clip.vision_model.config)
    if spec.input_size:
        pp["input_size"] = pp["resize_size"] = spec.input_size
    if spec.mean is not None and spec.std is not None:
        pp["mean"], pp["std"] = spec.mean, spec.std
    enc = CLIPPatchEncoder(
        clip,
        tokenizer,
        name=spec.name,
        checkpoint_hash=checkpoint_hash(hf_weight_files(folder)),
        precision=spec.precision,
        **pp,
    )
    log.info("encoder %s: CLIP from %s (D=%d, %d px)", spec.name, folder, enc.embed_dim,
             enc.input_size)  # fmt: skip
    return enc
