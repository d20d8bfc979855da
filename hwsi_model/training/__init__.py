"""DeepSpeed training of the three MLLM-HWSI stages on the cached multi-scale tensors.

- :mod:`~hwsi_model.training.formats`: readers of reports and instruction items (WSI-Bench,
  SlideChat SlideInstruction/SlideBench, WSI-VQA, our demo).
- :mod:`~hwsi_model.training.data`: manifest, datasets joined to the caches, resumable sampler.
- :mod:`~hwsi_model.training.config`: per-stage settings -> DeepSpeed config.
- :mod:`~hwsi_model.training.modeling`: the model each stage starts from, the final folder.
- :mod:`~hwsi_model.training.engine`: the training loop (checkpoints, resume, validation).
- :mod:`~hwsi_model.training.entry`: the command line (``python -m hwsi_model.training.entry``).
- :mod:`~hwsi_model.training.demo_eval`: closed-question accuracy and slide-report recall@1.

DeepSpeed is imported only when training starts.
"""

from hwsi_model.training.config import StageConfig
from hwsi_model.training.formats import (
    InstructionItem,
    ReportRecord,
    read_instructions,
    read_reports,
)

__all__ = ["InstructionItem", "ReportRecord", "StageConfig", "read_instructions", "read_reports"]
