"""The MLLM-HWSI model: CCAF, region and slide encoders, scale projectors, hierarchical losses,
text views and encoder, the LLM wrapper, its processor (prompt layout, tokenisation), the model
folder (:mod:`~hwsi_model.model.checkpoint`) and evidence maps.

Modules consume the per-slide cache contract as tensors (:mod:`hwsi_model.model.batch`).
``peft`` (LoRA) is imported only when LoRA is used.
"""

from hwsi_model.model.batch import SlideBatch, SlideTensors, collate_slides
from hwsi_model.model.ccaf import CCAF
from hwsi_model.model.configuration import (
    SCALES,
    CCAFConfig,
    HWSIConfig,
    LoraSettings,
    LossConfig,
    ProjectorConfig,
    RegionEncoderConfig,
    ResamplerConfig,
    SlideEncoderConfig,
    VisualConfig,
)
from hwsi_model.model.evidence import Evidence, evidence_scores
from hwsi_model.model.hierarchy import HierarchicalVisualEncoder, UnitEmbeddings, VisualOutput
from hwsi_model.model.losses import (
    HierarchicalContrastiveLoss,
    causal_lm_loss,
    combine_losses,
    cross_scale_consistency,
)
from hwsi_model.model.mllm import HWSIModel, HWSIOutput
from hwsi_model.model.processor import HWSIProcessor
from hwsi_model.model.region_encoder import RegionEncoder
from hwsi_model.model.slide_encoder import SlideEncoder
from hwsi_model.model.stages import configure_stage
from hwsi_model.model.text_encoder import TextEncoder
from hwsi_model.model.text_views import TextViews, split_report

__all__ = [
    "CCAF",
    "SCALES",
    "CCAFConfig",
    "Evidence",
    "HWSIConfig",
    "HWSIModel",
    "HWSIOutput",
    "HWSIProcessor",
    "HierarchicalContrastiveLoss",
    "HierarchicalVisualEncoder",
    "LoraSettings",
    "LossConfig",
    "ProjectorConfig",
    "RegionEncoder",
    "RegionEncoderConfig",
    "ResamplerConfig",
    "SlideBatch",
    "SlideEncoder",
    "SlideEncoderConfig",
    "SlideTensors",
    "TextEncoder",
    "TextViews",
    "UnitEmbeddings",
    "VisualConfig",
    "VisualOutput",
    "causal_lm_loss",
    "collate_slides",
    "combine_losses",
    "configure_stage",
    "cross_scale_consistency",
    "evidence_scores",
    "split_report",
]
