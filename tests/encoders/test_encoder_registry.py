"""The registry: names, specs, and clear one-line errors instead of downloads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hwsi_model.encoders import (
    EncoderNotAvailableError,
    UnknownEncoderError,
    get_spec,
    list_encoders,
    load_encoder,
)
from hwsi_model.encoders.base import IMAGENET_MEAN, OPENAI_CLIP_MEAN
from hwsi_model.errors import HwsiError

PATHOLOGY = {
    # name: (hub repo, embed_dim, input_size)
    "conch_v1": ("MahmoodLab/CONCH", 512, 448),
    "conch_v1_5": ("MahmoodLab/conchv1_5", 768, 448),
    "uni": ("MahmoodLab/UNI", 1024, 224),
    "uni2-h": ("MahmoodLab/UNI2-h", 1536, 224),
    "virchow2": ("paige-ai/Virchow2", 2560, 224),
    "h-optimus-0": ("bioptimus/H-optimus-0", 1536, 224),
    "h-optimus-1": ("bioptimus/H-optimus-1", 1536, 224),
    "prov-gigapath": ("prov-gigapath/prov-gigapath", 1536, 224),
}
TIMM_IMPORTABLE = importlib.util.find_spec("timm") is not None


def test_list_encoders_has_every_name_with_its_description() -> None:
    specs = {s.name: s for s in list_encoders()}
    assert set(specs) == {"tiny-vit", "hf", "clip", "plip", *PATHOLOGY}
    assert specs["plip"].family == specs["clip"].family == "clip"
    assert specs["plip"].hf_repo == "vinid/plip" and specs["plip"].input_size == 224
    for name, (repo, dim, size) in PATHOLOGY.items():
        s = specs[name]
        assert (s.hf_repo, s.embed_dim, s.input_size) == (repo, dim, size), name
        assert s.needs_checkpoint and s.checkpoint_file and s.notes
        assert s.family in ("timm", "conch_v1", "conch_v1_5")
        assert s.precision == "bf16"  # ViT-L and larger (and CONCH at 448 px) on GPU
    assert specs["uni"].mean == IMAGENET_MEAN
    assert specs["conch_v1"].mean == OPENAI_CLIP_MEAN
    assert specs["h-optimus-0"].mean == (0.707223, 0.578729, 0.703617)
    assert specs["h-optimus-0"].std == (0.211883, 0.230117, 0.177517)
    assert specs["virchow2"].pooling == "cls+mean" and specs["virchow2"].token_dim == 1280
    json.dumps([s.to_dict() for s in list_encoders()])  # JSON-able for listings and attributes


def test_aliases_and_timm_names_resolve() -> None:
    assert get_spec("UNI_v2").name == "uni2-h"
    assert get_spec("conch_v15").name == "conch_v1_5"
    assert get_spec("gigapath").name == "prov-gigapath"
    spec = get_spec("timm:resnet50")
    assert (spec.family, spec.arch, spec.name) == ("timm", "resnet50", "timm:resnet50")


def test_unknown_names_fail_with_the_known_list() -> None:
    with pytest.raises(UnknownEncoderError, match=r"known: .*uni") as err:
        load_encoder("unii")
    assert isinstance(err.value, HwsiError)
    with pytest.raises(UnknownEncoderError, match="timm model name"):
        get_spec("timm:")


@pytest.mark.parametrize("name", sorted(PATHOLOGY))
def test_pathology_entries_without_weights_say_what_to_download(name: str, tmp_path: Path) -> None:
    repo = PATHOLOGY[name][0]
    spec = get_spec(name)
    with pytest.raises(EncoderNotAvailableError) as err:
        load_encoder(name)
    msg = str(err.value)
    assert isinstance(err.value, HwsiError) and "\n" not in msg
    assert f"https://huggingface.co/{repo}" in msg
    assert spec.checkpoint_file in msg and "embed.checkpoint" in msg
    assert "never downloads" in msg
    missing = tmp_path / "nowhere" / "pytorch_model.bin"
    with pytest.raises(EncoderNotAvailableError, match="does not exist") as err:
        load_encoder(name, checkpoint=missing)
    assert str(missing) in str(err.value) and repo in str(err.value)
    with pytest.raises(EncoderNotAvailableError, match="no weights file"):
        load_encoder(name, checkpoint=tmp_path)  # an empty folder


def test_tiny_and_hf_entries_without_a_folder_say_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(EncoderNotAvailableError, match="build_tiny_encoder"):
        load_encoder("tiny-vit")
    with pytest.raises(EncoderNotAvailableError, match=r"config\.json"):
        load_encoder("hf", checkpoint=tmp_path)  # a folder that is no model
    with pytest.raises(EncoderNotAvailableError, match="random weights are not offered"):
        load_encoder("hf", checkpoint="random")


@pytest.mark.skipif(TIMM_IMPORTABLE, reason="timm is installed here")
def test_timm_entries_without_timm_name_timm_and_torchvision(tmp_path: Path) -> None:
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"pos_embed": torch.zeros(1)}, weights)
    for name, ckpt in (("uni", weights), ("conch_v1_5", tmp_path), ("timm:resnet50", "random")):
        with pytest.raises(EncoderNotAvailableError) as err:
            load_encoder(name, checkpoint=ckpt)
        msg = str(err.value)
        assert "`timm`" in msg and "torchvision" in msg and torch.__version__ in msg, msg
        assert "\n" not in msg
