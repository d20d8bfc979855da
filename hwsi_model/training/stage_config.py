"""Per-stage training configuration (:class:`StageConfig`) and its DeepSpeed config dict.

One dataclass per stage run; it round-trips through JSON (written as ``stage_config.json`` in the
stage's output folder) and maps onto the workflow's ``training.stageN`` config block. What
trains in each stage is fixed by :mod:`hwsi_model.model.stages`; here are only the knobs:

=======================  ===================================================================
knob                     meaning
=======================  ===================================================================
zero_stage               DeepSpeed ZeRO stage (0-3)
precision                ``fp32``, ``bf16`` or ``fp16`` (CPU: fp32 or bf16)
micro_batch_size         slides per micro-batch and rank (>= 2 for the contrastive losses)
grad_accum               micro-batches per optimizer step
lr, weight_decay, betas  AdamW (a ``torch.optim.AdamW``: no compiled op needed)
schedule                 ``cosine``, ``linear`` or ``constant`` after ``warmup_steps``
clip                     gradient clipping (global norm; 0 = off)
epochs, max_steps        training length (``max_steps`` optimizer steps caps the epochs)
checkpoint_every         DeepSpeed checkpoint every N optimizer steps (and at each epoch end)
early_stopping_patience  stop after N epochs without a better validation loss (``None``: off)
=======================  ===================================================================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsi_model.atomic import write_text_atomic
from hwsi_model.model.configuration import VISUAL_INPUTS

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class StageConfig:
    """Settings of one training stage (see the module docstring for the knobs)."""

    stage: int = 1
    zero_stage: int = 2
    precision: str = "fp32"
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    clip: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = None
    validate: bool = True
    seed: int = 0
    num_workers: int = 0
    in_memory: bool = False
    log_every: int = 1
    #: Stage 1: train the text encoder's top N transformer layers (0: frozen).
    text_encoder_top_layers: int = 0
    #: Stages 2-3: add L_HC + L_CS (in the LLM space) to L_LM when reports are given.
    aux_losses: bool = True
    #: Loss weights overriding the model's ``config.loss`` (``None``: keep).
    lm_weight: float | None = None
    hc_weight: float | None = None
    cs_weight: float | None = None
    #: Stage 3: ``"lora"`` or ``"full"`` (the workflow's ``"auto"`` is resolved before, by
    #: ``resolve_llm_tuning``); LoRA rank/alpha/dropout/targets.
    llm_tuning: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    #: Write the LLM (merged with its LoRA adapters) into the final model folder.
    save_llm: bool = False
    #: Stages 2-3: recompute the LLM's layers in the backward pass (less memory, about a third
    #: more compute); ``None``: on when the run has a CUDA device, off on the CPU.
    llm_gradient_checkpointing: bool | None = None
    #: Stages 2-3: train a baseline from the starting folder instead of the method
    #: (``"flat"`` or ``"none"``, see ``HWSIConfig.visual_input``); ``None``: keep the folder's.
    visual_input: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0-3, got {self.zero_stage}")
        if self.llm_tuning not in ("lora", "full"):
            raise ValueError(f"llm_tuning must be 'lora' or 'full', got {self.llm_tuning!r}")
        if self.visual_input is not None and self.visual_input not in VISUAL_INPUTS:
            raise ValueError(f"visual_input must be one of {VISUAL_INPUTS} or null")
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("micro_batch_size and grad_accum must be >= 1")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    # -- DeepSpeed -------------------------------------------------------------------------

    def deepspeed_config(self, world_size: int = 1) -> dict[str, Any]:
        """The DeepSpeed config dict (the optimizer and schedule are built in Python)."""
        cfg: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "train_batch_size": self.micro_batch_size * self.grad_accum * world_size,
            "gradient_clipping": self.clip,
            "zero_optimization": {"stage": self.zero_stage},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": self.precision == "bf16"},
            "fp16": {"enabled": self.precision == "fp16", "initial_scale_power": 12},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if self.zero_stage == 3:
            cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        return cfg

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> StageConfig:
        """Build from a dict (e.g. the workflow's ``training.stageN`` block); unknown keys fail."""
        known = {f.name for f in dataclasses.fields(cls)}
        merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {unknown}; known: {sorted(known)}")
        return cls(**merged)

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> StageConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def resolve_llm_tuning(tuning: str, llm: str | None) -> str:
    """Stage 3's LLM tuning with ``"auto"`` decided by the LLM (``training.llm``): full tuning
    for the workflow's tiny demo LM (``"demo"``: two layers of width 64 built from the cohort,
    where adapters would only shrink what it can learn), LoRA for a pretrained LLM (a packaged
    name such as ``"smollm2"`` or a folder), which keeps its weights and the optimizer small."""
    if tuning != "auto":
        return tuning
    return "full" if llm == "demo" else "lora"


def lr_lambda(config: StageConfig, total_steps: int):
    """Multiplier of the base learning rate at optimizer step ``s`` (warm-up, then schedule)."""
    import math

    warm = max(0, config.warmup_steps)
    total = max(total_steps, warm + 1)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        lo = config.min_lr_ratio
        if config.schedule == "linear":
            return lo + (1 - lo) * (1 - t)
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))

    return f
