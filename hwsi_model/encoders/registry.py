"""Encoder names -> specs, and :func:`load_encoder`: local weights only, never a download.

In the spirit of TRIDENT's encoder factory and its offline checkpoint registry, except that the
checkpoint path comes from the user's config (``embed.checkpoint``) and a missing one fails at once
with the repository and file to fetch by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hwsi_model.encoders.base import EncoderNotAvailableError, PatchEncoder, UnknownEncoderError
from hwsi_model.encoders.specs import ALIASES, NAMED_SPECS, EncoderSpec, timm_spec

log = logging.getLogger(__name__)

RANDOM = "random"  # checkpoint value for random weights (timm-based families; benchmarks only)
CONFIG_KEY = "embed.checkpoint"

_BY_NAME: dict[str, EncoderSpec] = {s.name: s for s in NAMED_SPECS}


def list_encoders() -> list[EncoderSpec]:
    """The named registry entries (``timm:<model_name>`` accepts any timm name besides)."""
    return list(NAMED_SPECS)


def get_spec(name: str) -> EncoderSpec:
    """The spec of ``name`` (case-insensitive; TRIDENT's names are accepted as aliases)."""
    if name.startswith("timm:"):
        model_name = name[len("timm:") :].strip()
        if not model_name:
            raise UnknownEncoderError("encoder 'timm:' needs a timm model name, e.g. timm:resnet50")
        return timm_spec(model_name)
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _BY_NAME:
        known = ", ".join(sorted(_BY_NAME))
        raise UnknownEncoderError(f"unknown encoder {name!r}; known: {known}, or timm:<model_name>")
    return _BY_NAME[key]


def how_to_get(spec: EncoderSpec) -> str:
    """What the user must download or build, and where to point the config."""
    if spec.hf_repo and spec.family == "clip":
        return (
            f"download the repository https://huggingface.co/{spec.hf_repo}, e.g. `hf download "
            f"{spec.hf_repo} --local-dir models/{spec.name}`, then set {CONFIG_KEY}: "
            f"models/{spec.name} in config.yaml (hwsi never downloads weights)"
        )
    if spec.hf_repo:
        local = f"models/{spec.name}/{spec.checkpoint_file}"
        return (
            f"download {spec.checkpoint_file} from https://huggingface.co/{spec.hf_repo} (gated: "
            f"accept its terms there first), e.g. `hf download {spec.hf_repo} "
            f"{spec.checkpoint_file} --local-dir models/{spec.name}`, then set {CONFIG_KEY}: "
            f"{local} in config.yaml (hwsi never downloads weights)"
        )
    if spec.name == "tiny-vit":
        return (
            "build one with hwsi_model.demo.tiny_encoder.build_tiny_encoder(folder) and set "
            f"{CONFIG_KEY} to that folder"
        )
    if spec.family in ("hf", "clip"):
        return (
            f"set {CONFIG_KEY} to a local Hugging Face model folder (config.json + weights, "
            "e.g. fetched with `hf download <repo> --local-dir <folder>`)"
        )
    return (
        f"set {CONFIG_KEY} to a local weights file (.safetensors/.bin/.pth) of this timm model, "
        f"or to '{RANDOM}' for random weights (benchmarks only)"
    )


def _not_available(spec: EncoderSpec, problem: str) -> EncoderNotAvailableError:
    return EncoderNotAvailableError(f"encoder {spec.name!r}: {problem}; {how_to_get(spec)}")


def _resolve_checkpoint(spec: EncoderSpec, checkpoint: str | Path | None) -> Path | None:
    """The local path to load (``None``: random weights), or an error saying what to fetch."""
    if checkpoint is None or str(checkpoint).strip() == "":
        raise _not_available(spec, "no checkpoint given")
    if str(checkpoint) == RANDOM:
        if spec.family in ("hf", "clip"):
            raise _not_available(spec, "random weights are not offered for the hf family")
        return None
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise _not_available(spec, f"checkpoint {path} does not exist")
    if spec.family in ("hf", "clip"):
        if path.is_file():
            path = path.parent  # a weights file inside the model folder
        return path
    from hwsi_model.encoders.timm_encoder import resolve_weights_file

    try:
        return resolve_weights_file(path, spec.checkpoint_file)
    except FileNotFoundError:
        raise _not_available(spec, f"no weights file in {path}") from None


def load_encoder(
    name: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> PatchEncoder:
    """Load a registered encoder from local weights, frozen, in eval mode, on ``device``.

    Args:
        name: a registry name (:func:`list_encoders`), an alias, or ``timm:<model_name>``.
        checkpoint: the local weights: a Hugging Face folder (``hf``, ``tiny-vit``), or a
            weights file / the folder holding it (timm and CONCH entries); ``"random"`` gives
            random weights for timm-based entries (benchmarks only).
        device: where the encoder (and its preprocessing) runs.

    Raises:
        EncoderNotAvailableError: weights missing (the message names the repository and file to
            download and the config key), or timm/torchvision not installed.
        UnknownEncoderError: no such name.
    """
    spec = get_spec(name)
    path = _resolve_checkpoint(spec, checkpoint)
    if spec.family == "hf":
        from hwsi_model.encoders.hf import load_hf_encoder

        enc: PatchEncoder = load_hf_encoder(spec, path)
    elif spec.family == "clip":
        from hwsi_model.encoders.hf import load_clip_encoder

        enc = load_clip_encoder(spec, path)
    elif spec.family == "timm":
        from hwsi_model.encoders.timm_encoder import build_timm_encoder

        enc = build_timm_encoder(spec, path)
    else:
        from hwsi_model.encoders.conch import build_conch_encoder

        enc = build_conch_encoder(spec, path)
    enc = enc.to(device).eval().requires_grad_(False)
    log.info(
        "loaded encoder %s (D=%d, tokens=%s, %d px, weights %s)",
        enc.name,
        enc.embed_dim,
        enc.token_dim,
        enc.input_size,
        enc.checkpoint_hash or "random",
    )
    return enc
