"""Configuration dataclasses of the MLLM-HWSI model (one per module, composed by ``HWSIConfig``).

Every config is a plain dataclass that round-trips through JSON (:meth:`HWSIConfig.to_dict` /
:meth:`HWSIConfig.from_dict`), so a trained model folder holds ``config.json`` next to its weights.
Input widths (patch-encoder and cell-encoder dimensions) live in :class:`VisualConfig`; the
sub-configs only describe their own module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic
from hwsi_model.devices import LLM_DTYPES

#: The four scales, fine to coarse. Text analogues: word, phrase, sentence, paragraph.
SCALES: tuple[str, ...] = ("cell", "patch", "region", "wsi")
#: What the LLM sees of a slide (HWSIConfig.visual_input): the method and the baselines.
VISUAL_INPUTS: tuple[str, ...] = ("hierarchy", "flat", "flat_cells", "none")


@dataclass
class CCAFConfig:
    """Cell-Cell Attention Fusion over the cells of one patch (paper: 2 layers, 2 heads, 768)."""

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    #: Number of Fourier frequencies for a cell's (x, y) centroid inside its patch (0..1).
    position_frequencies: int = 8


@dataclass
class RegionEncoderConfig:
    """Small ViT over a region's ``S x S`` grid of patch embeddings."""

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    #: Side of the region grid in patches (paper: 4096 px regions of 256 px patches = 16).
    region_size: int = 16


@dataclass
class SlideEncoderConfig:
    """Transformer over region tokens; ``pooling="mean"`` with 0 layers reproduces the release."""

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    #: ``"cls"`` (learned [CLS] token) or ``"mean"`` (masked mean over region states).
    pooling: str = "cls"

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"slide encoder pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.pooling == "cls" and self.num_layers < 1:
            raise ValueError("slide encoder pooling 'cls' needs num_layers >= 1")


@dataclass
class ProjectorConfig:
    """Scale-specific projectors (LayerNorm -> Linear -> GELU -> Linear)."""

    #: Width of the shared alignment space (stage 1).
    align_dim: int = 512
    #: LLM hidden size (stages 2-3); ``None`` builds no LLM projectors (filled in from the LLM).
    llm_hidden_size: int | None = None
    #: Intermediate width; ``None`` uses the output width.
    intermediate_size: int | None = None
    #: Width of the text encoder, projected into the alignment space; ``None``: no text projector.
    text_dim: int | None = None
    #: Add a learned scale-type embedding to the LLM-space tokens.
    scale_embedding: bool = True


@dataclass
class VisualConfig:
    """The visual side: CCAF + region encoder + slide encoder + projectors."""

    patch_dim: int = 768
    cell_dim: int = 768
    ccaf: CCAFConfig = field(default_factory=CCAFConfig)
    region: RegionEncoderConfig = field(default_factory=RegionEncoderConfig)
    slide: SlideEncoderConfig = field(default_factory=SlideEncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    #: Recompute transformer blocks in the backward pass (less memory, about 30 % more time).
    gradient_checkpointing: bool = False
    #: Run CCAF on at most this many patches at a time, grouped by cell count so that each
    #: chunk is padded only to its own largest patch (``None``: one pass over all patches).
    ccaf_chunk_size: int | None = 1024


@dataclass
class ResamplerConfig:
    """Learned-query (Perceiver) resampler compressing each fine token group to ``num_queries``."""

    num_queries: int = 32
    num_layers: int = 1
    num_heads: int = 8
    mlp_ratio: float = 2.0


@dataclass
class LoraSettings:
    """LoRA on the LLM via ``peft`` (installed separately)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class LossConfig:
    """``L = lm_weight * L_LM + hc_weight * L_HC + cs_weight * L_CS``."""

    lm_weight: float = 1.0
    hc_weight: float = 1.0
    cs_weight: float = 1.0
    #: Scales that take part in L_HC.
    hc_scales: list[str] = field(default_factory=lambda: list(SCALES))
    init_temperature: float = 0.07
    learnable_temperature: bool = True
    #: Upper bound of the logit scale (1 / temperature), as in CLIP.
    max_logit_scale: float = 100.0
    #: Late interaction: each text unit is scored by the mean of its ``mil_topk`` best visual units.
    mil_topk: int = 1
    #: Gather negatives across data-parallel ranks when ``torch.distributed`` is initialised.
    gather_distributed: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.hc_scales) - set(SCALES)
        if unknown:
            raise ValueError(f"unknown scale(s) in hc_scales: {sorted(unknown)}; use {SCALES}")
        if self.mil_topk < 1:
            raise ValueError("mil_topk must be >= 1")


@dataclass
class HWSIConfig:
    """Everything that is not the LLM's or text encoder's own weights; saved as ``config.json``."""

    visual: VisualConfig = field(default_factory=VisualConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: Local folder of a Hugging Face causal LM (e.g. Qwen2.5-7B-Instruct); ``None``: stage 1 only.
    llm_path: str | None = None
    #: Local folder of a Hugging Face text encoder (e.g. all-MiniLM-L6-v2).
    text_encoder_path: str | None = None
    text_pooling: str = "mean"
    text_max_length: int = 128
    #: The LLM weights' dtype: ``"auto"`` (bfloat16 on a CUDA device with bf16, float32 on the
    #: CPU; training takes its stage's precision), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    llm_dtype: str = "auto"
    #: Placeholder in the prompt replaced by the visual token groups.
    placeholder: str = "<image>"
    #: Scales sent to the LLM, in this order (each a group with its scale-type embedding).
    llm_scales: list[str] = field(default_factory=lambda: ["wsi", "region", "patch", "cell"])
    #: Cap on visual tokens per slide (without resampler: fine groups are subsampled).
    max_visual_tokens: int = 1024
    #: What the LLM sees of the slide: ``"hierarchy"`` (the method), or a baseline: ``"flat"``
    #: (one token: the mean of all patch embeddings through a projector; no cell or region
    #: scale), ``"flat_cells"`` (one token from the mean patch embedding and the mean cell
    #: embedding, morphometrics included: the flat baseline with the cell features the
    #: hierarchy sees) or ``"none"`` (text only: no visual token).
    visual_input: str = "hierarchy"
    resampler: ResamplerConfig | None = None
    lora: LoraSettings | None = None
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.llm_dtype not in LLM_DTYPES:
            raise ValueError(f"llm_dtype must be one of {LLM_DTYPES}, got {self.llm_dtype!r}")
        if self.visual_input not in VISUAL_INPUTS:
            raise ValueError(
                f"visual_input must be one of {VISUAL_INPUTS}, got {self.visual_input!r}"
            )
        unknown = set(self.llm_scales) - set(SCALES)
        if unknown:
            raise ValueError(f"unknown scale(s) in llm_scales: {sorted(unknown)}; use {SCALES}")
        if self.resampler is not None:
            n = sum(1 if s == "wsi" else self.resampler.num_queries for s in self.llm_scales)
            if n > self.max_visual_tokens:
                raise ValueError(
                    f"resampler gives {n} visual tokens, above max_visual_tokens="
                    f"{self.max_visual_tokens}"
                )

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HWSIConfig:
        data = dict(data)
        v = dict(data.pop("visual", {}))
        visual = VisualConfig(
            ccaf=CCAFConfig(**v.pop("ccaf", {})),
            region=RegionEncoderConfig(**v.pop("region", {})),
            slide=SlideEncoderConfig(**v.pop("slide", {})),
            projector=ProjectorConfig(**v.pop("projector", {})),
            **v,
        )
        loss = LossConfig(**data.pop("loss", {}))
        resampler = data.pop("resampler", None)
        lora = data.pop("lora", None)
        return cls(
            visual=visual,
            loss=loss,
            resampler=ResamplerConfig(**resampler) if resampler is not None else None,
            lora=LoraSettings(**lora) if lora is not None else None,
            **data,
        )

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HWSIConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
