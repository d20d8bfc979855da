rule tiles:
    """Patch grid (target mpp) over the tissue, grouped into regions; Zarr v3 store + QC picture."""
    input:
        tissue=f"{OUTDIR}/tissue/{{slide}}",
    output:
        store=directory(f"{OUTDIR}/tiles/{{slide}}.zarr"),
        qc=f"{OUTDIR}/qc/tiling/{{slide}}.png",
    log:
        f"{OUTDIR}/logs/tiles/{{slide}}.log",
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
        expand(f"{OUTDIR}/tiles/{{slide}}.zarr", slide=SAMPLES),
    output:
        f"{OUTDIR}/tiles/summary.tsv",
    log:
        f"{OUTDIR}/logs/tiling_summary.log",
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/tiling_summary.py"
