rule tissue:
    """Tissue mask of one slide on a low-resolution thumbnail."""
    input:
        slide=slide_path,
    output:
        directory(OUT.tissue("{slide}")),
    log:
        OUT.log("tissue", "{slide}"),
    benchmark:
        OUT.benchmark("tissue", "{slide}")
    conda:
        "../envs/hwsi.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        mpp_override=slide_mpp_override,
        tissue=TISSUE_DETECT_CFG,
        config_hash=TISSUE_HASH,
    script:
        "../workflow_scripts/detect_tissue.py"
