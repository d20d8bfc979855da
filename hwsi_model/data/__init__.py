"""The contracts between the pipeline's stages, below both training and evaluation.

- :mod:`~hwsi_model.data.layout`: every path under ``outdir`` and each store's schema name.
- :mod:`~hwsi_model.data.stores`: one module per per-slide store, its schema, reader, writer
  and validator (``tiles``, ``cells``, ``patch_embeddings``, ``selection``,
  ``cell_embeddings``, ``cache``).
- :mod:`~hwsi_model.data.manifest`: the cohort manifest (read and write).
- :mod:`~hwsi_model.data.text_records`: report and instruction (VQA) files in the formats
  users have (WSI-Bench, SlideChat, WSI-VQA, the demo).
- :mod:`~hwsi_model.data.pairs`: (slide, text) datasets over the manifest and their collation.
- :mod:`~hwsi_model.data.current`: whether a step's output is current (its recorded
  parameters and inputs against today's), so a job of several steps redoes only what changed.
- :mod:`~hwsi_model.data.check`: ``hwsi check``, every store of a cohort validated.
"""
