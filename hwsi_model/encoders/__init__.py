"""Patch encoders: a registry of frozen image encoders loaded from local weights only.

``load_encoder(name, checkpoint, device)`` returns a :class:`PatchEncoder`: uint8 patches in,
on-device resize + normalisation, pooled embeddings ``[B, D]`` and ViT token maps
``[B, h, w, token_dim]`` out. ``list_encoders()`` describes every named entry.
"""

from hwsi_model.encoders.base import (
    EncoderNotAvailableError,
    PatchEncoder,
    UnknownEncoderError,
    checkpoint_hash,
)
from hwsi_model.encoders.registry import get_spec, list_encoders, load_encoder
from hwsi_model.encoders.specs import EncoderSpec

__all__ = [
    "EncoderNotAvailableError",
    "EncoderSpec",
    "PatchEncoder",
    "UnknownEncoderError",
    "checkpoint_hash",
    "get_spec",
    "list_encoders",
    "load_encoder",
]
