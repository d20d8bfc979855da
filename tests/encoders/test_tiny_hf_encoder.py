"""The Hugging Face path end to end with a tiny ViT: build, save, load, preprocess, forward."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from hwsi_model.demo.tiny_encoder import build_tiny_encoder
from hwsi_model.encoders import PatchEncoder, checkpoint_hash, load_encoder
from hwsi_model.encoders.base import IMAGENET_MEAN, IMAGENET_STD


def _patches(n: int, side: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def tiny(tiny_vit_dir: Path) -> PatchEncoder:
    return load_encoder("tiny-vit", checkpoint=tiny_vit_dir)


def test_tiny_vit_is_saved_as_a_real_hf_folder_and_loads_by_path(
    tiny_vit_dir: Path, tiny: PatchEncoder
) -> None:
    names = {p.name for p in tiny_vit_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert isinstance(tiny, PatchEncoder)
    assert (tiny.name, tiny.embed_dim, tiny.token_dim, tiny.input_size) == ("tiny-vit", 32, 32, 64)
    assert not tiny.training
    assert not any(p.requires_grad for p in tiny.parameters())
    assert tiny.checkpoint_hash == checkpoint_hash(tiny_vit_dir / "model.safetensors")


def test_the_generic_hf_entry_loads_the_same_folder(tiny_vit_dir: Path, tiny: PatchEncoder) -> None:
    generic = load_encoder("hf", checkpoint=tiny_vit_dir)
    assert generic.name == "hf"
    assert generic.checkpoint_hash == tiny.checkpoint_hash
    x = tiny.preprocess(_patches(3, 64))
    with torch.inference_mode():
        assert torch.equal(generic(x), tiny(x))
    # A weights file inside the folder is accepted too.
    by_file = load_encoder("hf", checkpoint=tiny_vit_dir / "model.safetensors")
    assert by_file.checkpoint_hash == tiny.checkpoint_hash


def test_preprocess_resizes_on_device_and_normalises(tiny: PatchEncoder) -> None:
    colours = torch.tensor([[200, 100, 50], [0, 255, 128]], dtype=torch.uint8)
    flat = colours[:, None, None, :].expand(2, 256, 256, 3).contiguous()
    x = tiny.preprocess(flat)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (colours.float() / 255 - mean) / std  # a flat image stays flat when resized
    assert torch.allclose(x.mean(dim=(2, 3)), expected, atol=1e-5)
    assert torch.allclose(x.std(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)

    # Textured input: the same as an antialiased bilinear resize followed by the normalisation.
    p = _patches(2, 256)
    ref = F.interpolate(
        p.permute(0, 3, 1, 2).float(), size=(64, 64), mode="bilinear", antialias=True
    )
    ref = (ref / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(tiny.preprocess(p), ref, atol=1e-5)
    # Already at the input size: no resampling at all.
    p64 = _patches(1, 64)
    exact = (p64.permute(0, 3, 1, 2).float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(tiny.preprocess(p64), exact, atol=1e-6)


def test_preprocess_rejects_float_or_channel_first_input(tiny: PatchEncoder) -> None:
    with pytest.raises(TypeError, match="uint8"):
        tiny.preprocess(torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        tiny.preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_forward_shapes_and_token_map_on_the_vit_grid(tiny: PatchEncoder) -> None:
    x = tiny.preprocess(_patches(5, 128))
    with torch.inference_mode():
        emb = tiny(x)
        emb2, tokens = tiny.forward_with_tokens(x)
        hidden = tiny.model(pixel_values=x).last_hidden_state  # [B, 1 + 16, 32]
    assert emb.shape == (5, 32) and torch.equal(emb, emb2)
    assert tokens.shape == (5, 64 // 16, 64 // 16, 32)  # [B, h, w, token_dim] = the 4 x 4 grid
    assert torch.equal(emb, hidden[:, 0])  # CLS
    # Row-major grid without the CLS token: token (i, j) is sequence position 1 + 4 i + j.
    assert torch.equal(tokens[:, 2, 3], hidden[:, 1 + 2 * 4 + 3])
    assert torch.equal(tokens.reshape(5, 16, 32), hidden[:, 1:])
    # Patches differ, so do their embeddings (random weights still tell them apart).
    assert torch.cdist(emb, emb).max() > 1e-3


def test_encoding_is_deterministic_across_builds_and_loads(
    tmp_path: Path, tiny: PatchEncoder
) -> None:
    a = build_tiny_encoder(tmp_path / "a", seed=0)
    b = build_tiny_encoder(tmp_path / "b", seed=0)
    c = build_tiny_encoder(tmp_path / "c", seed=1)
    assert checkpoint_hash(a) == checkpoint_hash(b) == tiny.checkpoint_hash
    assert checkpoint_hash(c) != checkpoint_hash(a)
    x = tiny.preprocess(_patches(4, 96, seed=3))
    with torch.inference_mode():
        ea, eb, ec = (load_encoder("tiny-vit", checkpoint=p)(x) for p in (a, b, c))
        again = tiny(x)
    assert torch.equal(ea, eb) and torch.equal(ea, again)
    assert not torch.equal(ea, ec)


def test_checkpoint_hash_is_the_sha256_prefix_and_stable(tmp_path: Path) -> None:
    w1, w2 = tmp_path / "b.safetensors", tmp_path / "a.bin"
    w1.write_bytes(b"weights one")
    w2.write_bytes(b"weights two")
    (tmp_path / "config.json").write_text("{}")  # not a weights file
    assert checkpoint_hash(w1) == hashlib.sha256(b"weights one").hexdigest()[:16]
    both = checkpoint_hash(tmp_path)
    assert len(both) == 16 and both == checkpoint_hash([w1, w2]) == checkpoint_hash([w2, w1])
    assert both not in (checkpoint_hash(w1), checkpoint_hash(w2))
    assert checkpoint_hash(tmp_path / "absent") == ""


def test_hf_family_skips_register_tokens_and_reads_the_crop(tmp_path: Path) -> None:
    """A DINOv2-with-registers folder: resize 40 + centre crop 32 (bicubic), 2 registers."""
    import json

    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(
        image_size=64,  # native grid 8 x 8; the model interpolates its positions to 4 x 4
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2,
        num_register_tokens=2,
    )
    Dinov2WithRegistersModel(cfg).save_pretrained(tmp_path)
    pp = {
        "size": {"shortest_edge": 40},
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "resample": 3,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.2, 0.2, 0.2],
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pp))
    enc = load_encoder("hf", checkpoint=tmp_path)
    assert (enc.input_size, enc.resize_size, enc.interpolation) == (32, 40, "bicubic")
    x = enc.preprocess(_patches(2, 256))
    assert x.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        emb, tokens = enc.forward_with_tokens(x)
        hidden = enc.model(pixel_values=x).last_hidden_state  # [B, 1 + 2 + 16, 16]
    assert hidden.shape[1] == 1 + 2 + 16
    assert tokens.shape == (2, 4, 4, 16)
    assert torch.equal(tokens.reshape(2, 16, 16), hidden[:, 3:])  # CLS and registers skipped
    assert torch.equal(emb, hidden[:, 0])
