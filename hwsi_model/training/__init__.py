"""DeepSpeed training of the three MLLM-HWSI stages on the cached multi-scale tensors.

Reads the manifest, the caches and the report/instruction files through
:mod:`hwsi_model.data` (the contracts it shares with evaluation).

- :mod:`~hwsi_model.training.sampler`: the seeded, resumable, rank-sharded sampler.
- :mod:`~hwsi_model.training.stage_config`: per-stage settings -> DeepSpeed config.
- :mod:`~hwsi_model.training.stage_model`: the model each stage starts from, what it trains.
- :mod:`~hwsi_model.training.engine`: the training loop (checkpoints, resume, validation).
- :mod:`~hwsi_model.training.loss_curves`: the loss log (CSV) and its plot.
- :mod:`~hwsi_model.training.distributed`: the launch environment, DeepSpeed's start-up.
- :mod:`~hwsi_model.training.entry`: one stage from its inputs (``run_stage``) and its command
  line (``python -m hwsi_model.training.entry``).
- :mod:`~hwsi_model.training.launch`: how the workflow runs a stage (in process or torchrun),
  SLURM hostfiles.

DeepSpeed is imported only when training starts.
"""

from hwsi_model.training.stage_config import StageConfig

__all__ = ["StageConfig"]
