rule build_demo_encoder:
    """A tiny random ViT saved as a Hugging Face folder (demo only: no weights are downloaded)."""
    output:
        directory(f"{OUTDIR}/models/tiny_vit"),
    log:
        f"{OUTDIR}/logs/build_demo_encoder.log",
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    params:
        seed=config["demo"]["seed"],
    script:
        "../workflow_scripts/build_demo_encoder.py"


rule embed_patches:
    """Encoder embeddings of all tissue patches of one slide (float16, streamed to Zarr)."""
    input:
        unpack(encoder_inputs),
        slide=slide_path,
        tiles=f"{OUTDIR}/tiles/{{slide}}.zarr",
    output:
        directory(f"{OUTDIR}/embeddings/{{slide}}.zarr"),
    log:
        f"{OUTDIR}/logs/embed_patches/{{slide}}.log",
    conda:
        "../envs/hwsi.yaml"
    threads: config["embed"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["embed"]["gpu"],
    params:
        encoder=EMBED["encoder"],
        checkpoint=ENCODER_CHECKPOINT,
        extract=EXTRACT_PARAMS,
        mpp_override=slide_mpp_override,
        config_hash=EMBED_HASH,
    script:
        "../workflow_scripts/embed_patches.py"


rule select_patches:
    """Diagnostically relevant patches per region (diverse candidates, then top-k)."""
    input:
        embeddings=f"{OUTDIR}/embeddings/{{slide}}.zarr",
        tiles=f"{OUTDIR}/tiles/{{slide}}.zarr",
    output:
        f"{OUTDIR}/selection/{{slide}}.csv",
    log:
        f"{OUTDIR}/logs/select_patches/{{slide}}.log",
    conda:
        "../envs/hwsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        selection=SELECTION,
    script:
        "../workflow_scripts/select_patches.py"


rule embed_cells:
    """Per-nucleus embeddings of the selected patches (pooled tokens ++ morphometrics)."""
    input:
        unpack(encoder_inputs),
        slide=slide_path,
        tiles=f"{OUTDIR}/tiles/{{slide}}.zarr",
        selection=f"{OUTDIR}/selection/{{slide}}.csv",
        cells=f"{OUTDIR}/cells/{{slide}}.zarr",
    output:
        directory(f"{OUTDIR}/cell_embeddings/{{slide}}.zarr"),
    log:
        f"{OUTDIR}/logs/embed_cells/{{slide}}.log",
    conda:
        "../envs/hwsi.yaml"
    threads: config["embed"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=config["embed"]["gpu"],
    params:
        encoder=EMBED["encoder"],
        checkpoint=ENCODER_CHECKPOINT,
        extract=EXTRACT_PARAMS,
        top_k=SELECTION["top_k"],
        mpp_override=slide_mpp_override,
        config_hash=CELL_EMB_HASH,
    script:
        "../workflow_scripts/embed_cells.py"


rule build_cache:
    """The per-slide multi-scale cache (Zarr v3): the contract between extraction and training."""
    input:
        tiles=f"{OUTDIR}/tiles/{{slide}}.zarr",
        embeddings=f"{OUTDIR}/embeddings/{{slide}}.zarr",
        selection=f"{OUTDIR}/selection/{{slide}}.csv",
        cell_embeddings=f"{OUTDIR}/cell_embeddings/{{slide}}.zarr",
    output:
        directory(f"{OUTDIR}/cache/{{slide}}.zarr"),
    log:
        f"{OUTDIR}/logs/build_cache/{{slide}}.log",
    conda:
        "../envs/hwsi.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        selection=SELECTION,
        config_hash=CACHE_HASH,
    script:
        "../workflow_scripts/build_cache.py"


rule manifest:
    """One table of the cohort's caches: counts, split, label, cohort, encoder."""
    input:
        caches=expand(f"{OUTDIR}/cache/{{slide}}.zarr", slide=SAMPLES),
        samples=config["samples"],
    output:
        f"{OUTDIR}/manifest.csv",
    log:
        f"{OUTDIR}/logs/manifest.log",
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/manifest.py"
