rule tiles:
    """Patch grid (target mpp) over the tissue, grouped into regions; Zarr v3 store + QC picture."""
    input:
        tissue=OUT.tissue("{slide}"),
    output:
        store=directory(OUT.tiles("{slide}")),
        qc=OUT.qc("tiling", "{slide}"),
    log:
        OUT.log("tiles", "{slide}"),
    benchmark:
        OUT.benchmark("tiles", "{slide}")
    conda:
        "../envs/hwsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mpp=config["mpp"],
        patch_size=config["patch_size"],
        region_size=config["region_size"],
        mpp_tolerance=config["mpp_tolerance"],
        min_tissue_fraction=TISSUE_CFG["min_tissue_fraction"],
        config_hash=TILES_HASH,
    script:
        "../workflow_scripts/tile_slide.py"


rule tiling_summary:
    """One table of patches, regions and geometry per slide."""
    input:
        expand(OUT.tiles("{slide}"), slide=SAMPLES),
    output:
        OUT.tiling_summary,
    log:
        OUT.log("tiling_summary"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/tiling_summary.py"
