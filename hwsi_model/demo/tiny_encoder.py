"""A tiny random ViT saved as a real Hugging Face folder, for tests and the demo.

It loads back through the ordinary ``hf`` path (``load_encoder("tiny-vit", checkpoint=folder)``),
so tests exercise the same code as a real encoder, offline and in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hwsi_model.encoders.base import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class TinyViTParams:
    """Shape of the tiny ViT (defaults: 64 px input, 16 px patches -> 4 x 4 grid, width 32)."""

    image_size: int = 64
    patch_size: int = 16
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    # Larger than ViT's 0.02 so that random weights still tell patches apart (demo selection).
    initializer_range: float = 0.2


def build_tiny_encoder(
    folder: str | Path, seed: int = 0, params: TinyViTParams = TinyViTParams()
) -> Path:
    """Build a random ``ViTModel`` with ``seed`` and save it (safetensors + preprocessor config).

    The global torch RNG state is left untouched. Returns ``folder``.
    """
    from transformers import ViTConfig, ViTModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(
        image_size=params.image_size,
        patch_size=params.patch_size,
        hidden_size=params.hidden_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        intermediate_size=params.intermediate_size,
        initializer_range=params.initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTModel(config)
    model.save_pretrained(folder)
    side = {"height": params.image_size, "width": params.image_size}
    preprocessor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": side,
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    return folder
