"""The workflow's per-slide jobs: each runs several steps of one slide in one process.

- :mod:`~hwsi_model.jobs.prepare`: ``prepare_slide`` -- tissue mask, then the patch/region grid
  and its QC picture (CPU, light imports).
- :mod:`~hwsi_model.jobs.extract`: ``extract_slide`` -- patch embeddings, selection, nuclei,
  cell embeddings and the multi-scale cache (the GPU steps), with the encoder and the StarDist
  model loaded once for the job.
  ``extract_batch`` runs it for several slides in one process (``embed.slides_per_job``;
  :mod:`~hwsi_model.jobs.batches` says which slides share one).
- :mod:`~hwsi_model.jobs.steps`: how a job runs its steps: a step whose output is current
  (:mod:`hwsi_model.data.current`) is kept, the others run and are timed.

Two jobs per slide instead of seven: the interpreter, the imports (torch, TensorFlow) and the
models are paid once per slide, and Snakemake plans two jobs per slide (see README,
"Per-slide jobs").
"""
