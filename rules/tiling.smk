if BATCHED:
    for _batch in BATCHES:
        _members = batch_members(_batch, TILED_SET)
        if not _members:
            continue

        rule:
            """Tissue masks, patch/region grids and tiling QC pictures of a batch of slides
            (embed.slides_per_job) in one process; a slide that fails is excluded alone.
            """
            name:
                batch_rule("prepare_batch", _batch)
            input:
                slides=[path for _, path, _ in _members],
            output:
                batch_outputs("prepare", [sid for sid, _, _ in _members]),
            log:
                OUT.log("prepare_batch", _batch),
            benchmark:
                OUT.benchmark("prepare_batch", _batch)
            conda:
                "../envs/hwsi.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=10 + 5 * len(_members),
            params:
                members=_members,
                settings=PREPARE_SETTINGS,
            script:
                "../workflow_scripts/prepare_batch.py"

else:

    rule prepare_slide:
        """Tissue mask, patch/region grid (Zarr v3 store) and tiling QC picture of one slide."""
        input:
            slide=slide_path,
        output:
            # update(): kept when the job re-runs, so that a step still current is not redone
            tissue=update(directory(OUT.tissue("{slide}"))),
            tiles=update(directory(OUT.tiles("{slide}"))),
            qc=update(OUT.qc("tiling", "{slide}")),
        log:
            OUT.log("prepare_slide", "{slide}"),
        benchmark:
            OUT.benchmark("prepare_slide", "{slide}")
        conda:
            "../envs/hwsi.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            mpp_override=slide_mpp_override,
            settings=PREPARE_SETTINGS,
        script:
            "../workflow_scripts/prepare_slide.py"


rule tiling_summary:
    """One table of patches, regions and geometry per slide."""
    input:
        expand(OUT.tiles("{slide}"), slide=TILED),
    output:
        OUT.tiling_summary,
    log:
        OUT.log("tiling_summary"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/tiling_summary.py"
