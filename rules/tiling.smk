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
