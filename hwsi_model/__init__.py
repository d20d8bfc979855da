"""hwsi: hierarchical whole-slide-image multimodal LLM pipeline (MLLM-HWSI).

Pipeline layout (one sub-package per step):

- ``hwsi_model.slide``   -- slide I/O over OpenSlide, micrometre-based geometry
- ``hwsi_model.tiling``  -- tissue detection, patch/region grid, the per-slide tiles store
- ``hwsi_model.demo``    -- synthetic demo cohort (pyramidal TIFFs, reports, VQA items)
"""

__version__ = "0.1.0"
