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


if TEXT_QUERIES:

    rule embed_prompts:
        """The selection's prompt bank (embed.selection.prompts, or the default bank) embedded
        once by the patch encoder's text tower, in the space of its patch embeddings.
        """
        input:
            **encoder_inputs(),
        output:
            OUT.selection_queries,
        log:
            OUT.log("embed_prompts"),
        localrule: True
        conda:
            "../envs/hwsi.yaml"
        params:
            encoder=EMBED["encoder"],
            checkpoint=ENCODER_CHECKPOINT,
            prompts=SELECTION["prompts"],
        script:
            "../workflow_scripts/embed_prompts.py"


if BATCHED:
    for _batch in BATCHES:
        _members = batch_members(_batch, CACHED_SET)
        if not _members:
            continue

        rule:
            """The GPU chains of a batch of slides (embed.slides_per_job) in one process: the
            interpreter, torch, TensorFlow, the encoder and the StarDist model are paid once;
            a slide that fails is excluded alone."""
            name:
                batch_rule("extract_batch", _batch)
            input:
                **model_inputs(),
                slides=[path for _, path, _ in _members],
                tiles=[OUT.tiles(sid) for sid, _, _ in _members],
            output:
                batch_outputs("extract", [sid for sid, _, _ in _members]),
                record=OUT.extract_batch(_batch),
            log:
                OUT.log("extract_batch", _batch),
            benchmark:
                OUT.benchmark("extract_batch", _batch)
            conda:
                "../envs/extract.yaml"
            threads: max(config["embed"]["threads"], config["cells"]["threads"])
            resources:
                mem_mb=8000,
                runtime=60 + 30 * len(_members),
                gpu=max(config["embed"]["gpu"], config["cells"]["gpu"]),
            params:
                members=_members,
                settings=EXTRACT_SETTINGS,
            script:
                "../workflow_scripts/extract_batch.py"

else:

    rule extract_slide:
        """Patch embeddings, selection, StarDist nuclei, cell embeddings and the multi-scale cache
        (the contract between extraction and training) of one slide, in one process.
        """
        input:
            **model_inputs(),
            slide=slide_path,
            tiles=OUT.tiles("{slide}"),
        output:
            # update(): kept when the job re-runs, so that a step still current is not redone
            embeddings=update(directory(OUT.embeddings("{slide}"))),
            selection=update(OUT.selection("{slide}")),
            selection_record=update(OUT.selection_record("{slide}")),
            cells=update(directory(OUT.cells("{slide}"))),
            cells_qc=update(OUT.qc("cells", "{slide}")),
            cells_geojson=update(OUT.cells_geojson("{slide}")),
            cell_embeddings=update(directory(OUT.cell_embeddings("{slide}"))),
            cache=update(directory(OUT.cache("{slide}"))),
        log:
            OUT.log("extract_slide", "{slide}"),
        benchmark:
            OUT.benchmark("extract_slide", "{slide}")
        conda:
            "../envs/extract.yaml"
        threads: max(config["embed"]["threads"], config["cells"]["threads"])
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=max(config["embed"]["gpu"], config["cells"]["gpu"]),
        params:
            mpp_override=slide_mpp_override,
            settings=EXTRACT_SETTINGS,
        script:
            "../workflow_scripts/extract_slide.py"


rule manifest:
    """One table of the cohort's caches (counts, split, label, cohort, encoder) and one of the
    slides excluded because a job failed on them."""
    input:
        caches=expand(OUT.cache("{slide}"), slide=CACHED),
        samples=config["samples"],
    output:
        manifest=OUT.manifest,
        failures=OUT.failures,
    log:
        OUT.log("manifest"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    params:
        missing=UNPLANNED,
    script:
        "../workflow_scripts/manifest.py"
