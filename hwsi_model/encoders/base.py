"""The patch-encoder interface the extraction engine works against, and its errors.

A :class:`PatchEncoder` takes uint8 RGB patches already on its device, resizes and normalises them
there (no CPU-side transforms in the loader workers), and returns one pooled embedding per patch
and, for ViTs, the map of patch tokens over the ViT's grid (used to pool cell features).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from hwsi_model.errors import HwsiError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class EncoderNotAvailableError(HwsiError):
    """The encoder's weights or its software (timm, torchvision) are not available locally."""


class UnknownEncoderError(HwsiError):
    """The encoder name is not in the registry."""


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of ``path``: the file itself, or the weight files directly in a folder.

    Sorted by name; suffixes :data:`WEIGHT_SUFFIXES`.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    return []


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_hash(files: str | Path | Sequence[str | Path]) -> str:
    """sha256 (first 16 hex digits) of the weights loaded.

    One file: the sha256 of its bytes (so ``sha256sum FILE | cut -c1-16`` gives the same value).
    A folder or several files: the sha256 over ``name  sha256`` lines of each weight file, in name
    order. No file: ``""`` (random initialisation).
    """
    if isinstance(files, (str, Path)):
        paths = weight_files(files)
    else:
        paths = sorted((Path(f) for f in files), key=lambda p: p.name)
    if not paths:
        return ""
    if len(paths) == 1:
        return _file_sha256(paths[0])[:16]
    lines = "".join(f"{p.name}  {_file_sha256(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


class PatchEncoder(nn.Module):
    """A frozen patch encoder with on-device preprocessing.

    Attributes:
        name: registry name (e.g. ``"uni"``, ``"tiny-vit"``, ``"timm:resnet50"``).
        embed_dim: ``D``, width of the pooled embedding.
        token_dim: width of the token map, ``None`` for CNNs without one.
        input_size: side ``S`` in px of the square input the model expects.
        checkpoint_hash: sha256[:16] of the weight file(s) loaded, ``""`` for random weights.
        precision: autocast hint on GPU (``"bf16"``, ``"fp16"`` or ``"fp32"``).
        resize_size: side the patch is resized to before a centre crop to ``input_size``
            (equal to ``input_size``: no crop).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (antialiased either way).
    """

    name: str
    embed_dim: int
    token_dim: int | None
    input_size: int
    checkpoint_hash: str

    def __init__(
        self,
        *,
        name: str,
        embed_dim: int,
        token_dim: int | None,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        checkpoint_hash: str = "",
        precision: str = "fp32",
        resize_size: int | None = None,
        interpolation: str = "bilinear",
    ):
        super().__init__()
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
        self.name = name
        self.embed_dim = int(embed_dim)
        self.token_dim = None if token_dim is None else int(token_dim)
        self.input_size = int(input_size)
        self.resize_size = int(resize_size or input_size)
        if self.resize_size < self.input_size:
            raise ValueError(f"resize_size {self.resize_size} < input_size {self.input_size}")
        self.interpolation = interpolation
        self.checkpoint_hash = checkpoint_hash
        self.precision = precision
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def preprocess(self, patches: Tensor) -> Tensor:
        """uint8 ``[B, H, W, 3]`` RGB (any ``H = W``, on the model's device) -> ``[B, 3, S, S]``.

        Float32 output. Resized on the device (antialiased ``interpolation``) to ``resize_size``,
        centre-cropped to ``S = input_size`` when larger, scaled to 0..1 and normalised with the
        encoder's mean/std.
        """
        if patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"patches must be [B, H, W, 3], got {tuple(patches.shape)}")
        if patches.dtype != torch.uint8:
            raise TypeError(f"patches must be uint8 RGB, got {patches.dtype}")
        x = patches.permute(0, 3, 1, 2).float()
        r, s = self.resize_size, self.input_size
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode=self.interpolation, antialias=True)
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 255.0)
        if r > s:
            top = (r - s) // 2
            x = x[:, :, top : top + s, top : top + s]
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return ((x * (1.0 / 255.0) - mean) / std).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, S, S]`` -> ``[B, D]`` pooled embedding."""
        return self.forward_with_tokens(x)[0]

    #: Whether :meth:`encode_text` embeds text into the space of the pooled embeddings.
    has_text_tower: bool = False

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``Q`` texts -> ``[Q, D]`` in the pooled embeddings' space (encoders with a text
        tower, e.g. the ``clip`` family); others raise :class:`EncoderNotAvailableError`."""
        raise EncoderNotAvailableError(f"encoder {self.name!r} has no text tower")

    def forward_with_tokens(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``[B, 3, S, S]`` -> (``[B, D]``, token map ``[B, h, w, token_dim]`` or ``None``).

        The token map covers the ViT's patch grid only (no CLS or register tokens).
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, embed_dim={self.embed_dim}, token_dim={self.token_dim}, "
            f"input_size={self.input_size}, checkpoint_hash={self.checkpoint_hash!r}"
        )


def tokens_to_grid(tokens: Tensor, height: int, width: int) -> Tensor:
    """Patch tokens ``[B, h*w, C]`` (row-major) -> ``[B, h, w, C]``; checks the count."""
    b, n, c = tokens.shape
    if n != height * width:
        raise ValueError(f"{n} patch tokens do not fill a {height} x {width} grid")
    return tokens.reshape(b, height, width, c)
