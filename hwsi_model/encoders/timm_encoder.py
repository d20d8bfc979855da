"""timm-based encoders: the architecture from timm (imported lazily), weights from a local file.

timm imports torchvision at import time, so it is an optional dependency: every entry point goes
through :func:`import_timm`, which turns a missing or broken install into a one-line
:class:`~hwsi_model.encoders.base.EncoderNotAvailableError`. :class:`TimmPatchEncoder` itself only
needs the module's timm API (``forward_features``, ``forward_head``, ``num_prefix_tokens``,
``patch_embed.patch_size``) and no timm import.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
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

POOLINGS = ("cls", "cls+mean", "head", "attn_pool")


class CheckpointMismatchError(EncoderNotAvailableError):
    """The checkpoint's tensors do not fit the encoder's architecture."""


def import_timm(for_name: str) -> Any:
    """``import timm``, or a clear error naming what to install."""
    try:
        return importlib.import_module("timm")
    except Exception as e:  # ImportError, or torchvision failing to load its compiled ops
        raise EncoderNotAvailableError(
            f"encoder {for_name!r} needs the `timm` package, which cannot be imported here "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); install `timm` "
            f"and a `torchvision` built for your torch {torch.__version__} (same release line and "
            "index as torch: timm imports torchvision). Encoders of the 'hf' family need neither."
        ) from e


def resolve_arch_kwargs(timm: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``"timm:layers.X"`` / ``"torch:nn.Y"`` string values to the classes they name."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith(("timm:", "torch:")):
            root_name, path = value.split(":", 1)
            obj: Any = timm if root_name == "timm" else torch
            for part in path.split("."):
                obj = getattr(obj, part)
            value = obj
        out[key] = value
    return out


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch pickle file (``weights_only``), unwrapped.

    Checkpoints that nest the weights under ``state_dict``/``model``/``module`` are unwrapped, and a
    ``module.`` prefix (DataParallel) is removed.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path), device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"{path} holds no state dict (a {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}


def fit_pos_embed(timm: Any, model: nn.Module, sd: dict[str, Tensor], key: str = "pos_embed"):
    """Resample a checkpoint's absolute position embedding to ``model``'s grid (bilinear).

    As CONCH and TRIDENT do when the checkpoint was trained at another input size.
    """
    target = getattr(model, "pos_embed", None)
    if key not in sd or target is None or sd[key].shape == target.shape:
        return
    n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    sd[key] = timm.layers.resample_abs_pos_embed(
        sd[key],
        new_size=list(model.patch_embed.grid_size),
        num_prefix_tokens=n_prefix,
        interpolation="bilinear",
        antialias=False,
        verbose=False,
    )
    log.info("resampled %s to the %s grid", key, tuple(model.patch_embed.grid_size))


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], what: str, source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error listing a few offending keys."""
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{source} does not fit {what}: {len(missing)} missing tensors "
            f"{list(missing)[:3]}, {len(unexpected)} unexpected {list(unexpected)[:3]}; "
            "is it the right file for this encoder name?"
        )


class TimmPatchEncoder(PatchEncoder):
    """A timm model (ViT or CNN) behind the :class:`PatchEncoder` interface.

    Args:
        model: a module with timm's API: ``forward_features(x)`` -> ``[B, L, C]`` tokens (ViTs,
            prefix tokens first) or ``[B, C, h, w]`` maps (CNNs); ``forward_head(f,
            pre_logits=True)``; for ViTs ``num_prefix_tokens`` and ``patch_embed.patch_size``.
        pooling: ``"cls"``, ``"cls+mean"``, ``"head"`` (the model's own ``forward_head``) or
            ``"attn_pool"`` (``head`` applied to the full token sequence).
        head: the pooling module of ``"attn_pool"``: ``[B, L, C]`` -> ``[B, D]``.
        embed_dim: ``D``; ``None``: measured with one forward pass.
        **kw: the remaining :class:`PatchEncoder` fields.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        pooling: str,
        input_size: int,
        head: nn.Module | None = None,
        embed_dim: int | None = None,
        **kw: Any,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if (pooling == "attn_pool") != (head is not None):
            raise ValueError("a head module is needed with, and only with, pooling='attn_pool'")
        is_vit = hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")
        token_dim = int(getattr(model, "num_features", 0) or model.embed_dim) if is_vit else None
        super().__init__(
            name=name, embed_dim=embed_dim or 0, token_dim=token_dim, input_size=input_size, **kw
        )
        self.model = model
        self.head = head
        self.pooling = pooling
        self.is_vit = is_vit
        if is_vit:
            ps = model.patch_embed.patch_size
            self.patch_size = (int(ps), int(ps)) if isinstance(ps, int) else tuple(map(int, ps))
            self.num_prefix_tokens = int(model.num_prefix_tokens)
        if not embed_dim:
            with torch.inference_mode():
                x = torch.zeros(1, 3, input_size, input_size, device=self.mean.device)
                self.embed_dim = int(self.forward(x).shape[-1])

    def forward_with_tokens(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``[B, 3, S, S]`` -> (``[B, D]``, ``[B, h, w, token_dim]`` for ViTs / ``None``)."""
        feats = self.model.forward_features(x)
        if not self.is_vit or feats.ndim != 3:
            if self.pooling != "head":
                raise ValueError(f"{self.name}: pooling {self.pooling!r} needs a ViT token output")
            return self.model.forward_head(feats, pre_logits=True), None
        patch_tokens = feats[:, self.num_prefix_tokens :]
        if self.pooling == "cls":
            pooled = feats[:, 0]
        elif self.pooling == "cls+mean":
            pooled = torch.cat([feats[:, 0], patch_tokens.mean(dim=1)], dim=-1)
        elif self.pooling == "head":
            pooled = self.model.forward_head(feats, pre_logits=True)
        else:
            pooled = self.head(feats)
        h, w = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        return pooled, tokens_to_grid(patch_tokens, h, w)


def resolve_weights_file(path: str | Path, preferred: str | None) -> Path:
    """The weights file of ``path``: the file, or in a folder ``preferred`` / the only one.

    Raises:
        EncoderNotAvailableError: nothing suitable (the caller adds what to download).
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(str(p))
    names = [preferred] if preferred else []
    names += ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        if (p / name).is_file():
            return p / name
    found = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pth", ".pt")]
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"{p} (a folder without {names[0]})")


def build_timm_encoder(spec: EncoderSpec, weights: Path | None) -> TimmPatchEncoder:
    """Build ``spec.arch`` with timm and load ``weights`` (``None``: random, benchmarks only)."""
    timm = import_timm(spec.name)
    kwargs = resolve_arch_kwargs(timm, spec.arch_kwargs)
    try:
        model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    except RuntimeError as e:  # timm's "Unknown model"
        raise EncoderNotAvailableError(f"timm cannot build {spec.arch!r}: {e}") from e
    if weights is not None:
        sd = load_state_dict_file(weights)
        fit_pos_embed(timm, model, sd)
        load_strict(model, sd, f"timm {spec.arch!r} ({spec.name})", str(weights))
    else:
        log.warning("encoder %s: RANDOM weights (benchmarks only, not for features)", spec.name)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = spec.input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    interpolation = spec.interpolation
    if spec.name.startswith("timm:") and cfg.get("interpolation") in ("bilinear", "bicubic"):
        interpolation = cfg["interpolation"]
    return TimmPatchEncoder(
        model,
        name=spec.name,
        pooling=spec.pooling,
        input_size=input_size,
        embed_dim=spec.embed_dim,
        mean=spec.mean or tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=spec.std or tuple(cfg.get("std", IMAGENET_STD)),
        checkpoint_hash=checkpoint_hash(weights) if weights is not None else "",
        precision=spec.precision,
        resize_size=spec.resize_size,
        interpolation=interpolation,
    )
