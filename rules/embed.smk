rule build_demo_encoder:
    """A tiny random ViT saved as a Hugging Face folder (demo only: no weights are downloaded)."""
    output:
        directory(OUT.model("tiny_vit")),
    log:
        OUT.log("build_demo_encoder"),
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
        tiles=OUT.tiles("{slide}"),
    output:
        directory(OUT.embeddings("{slide}")),
    log:
        OUT.log("embed_patches", "{slide}"),
    benchmark:
        OUT.benchmark("embed_patches", "{slide}")
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
        embeddings=OUT.embeddings("{slide}"),
        tiles=OUT.tiles("{slide}"),
    output:
        OUT.selection("{slide}"),
    log:
        OUT.log("select_patches", "{slide}"),
    benchmark:
        OUT.benchmark("select_patches", "{slide}")
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
        tiles=OUT.tiles("{slide}"),
        selection=OUT.selection("{slide}"),
        cells=OUT.cells("{slide}"),
    output:
        directory(OUT.cell_embeddings("{slide}")),
    log:
        OUT.log("embed_cells", "{slide}"),
    benchmark:
        OUT.benchmark("embed_cells", "{slide}")
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
        tiles=OUT.tiles("{slide}"),
        embeddings=OUT.embeddings("{slide}"),
        selection=OUT.selection("{slide}"),
        cell_embeddings=OUT.cell_embeddings("{slide}"),
    output:
        directory(OUT.cache("{slide}")),
    log:
        OUT.log("build_cache", "{slide}"),
    benchmark:
        OUT.benchmark("build_cache", "{slide}")
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
        caches=expand(OUT.cache("{slide}"), slide=SAMPLES),
        samples=config["samples"],
    output:
        OUT.manifest,
    log:
        OUT.log("manifest"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/manifest.py"
