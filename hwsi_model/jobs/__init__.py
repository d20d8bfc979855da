"""The workflow's per-slide jobs: each runs several steps of one slide (or of a batch of
slides) in one process.

- :mod:`~hwsi_model.jobs.prepare`: ``prepare_slide`` -- tissue mask, then the patch/region grid
  and its QC picture (CPU, light imports).
- :mod:`~hwsi_model.jobs.extract`: ``extract_slide`` -- patch embeddings, selection, nuclei,
  cell embeddings and the multi-scale cache (the GPU steps), with the encoder and the StarDist
  model loaded once for the job.
- ``prepare_batch`` and ``extract_batch`` run the same for a batch of slides in one process
  (``embed.slides_per_job``; :mod:`~hwsi_model.jobs.batches` says which slides share one), each
  slide isolated (:mod:`~hwsi_model.jobs.isolation`).
- :mod:`~hwsi_model.jobs.steps`: how a job runs its steps: a step whose output is current
  (:mod:`hwsi_model.data.current`) is kept, the others run and are timed.

Two jobs per slide instead of seven, or two per batch of slides: the interpreter, the imports
(torch, TensorFlow) and the models are paid once per job, and Snakemake plans two jobs per
slide or per batch (see README, "Per-slide jobs").
"""
