rule train_demo_stardist:
    """A small StarDist2D trained on the demo cohort's ground-truth nucleus masks."""
    input:
        unpack(demo_stardist_inputs),
    output:
        directory(f"{OUTDIR}/models/stardist_demo"),
    log:
        f"{OUTDIR}/logs/train_demo_stardist.log",
    conda:
        "../envs/segmentation.yaml"
    threads: config["cells"]["threads"]
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=0,
    params:
        samples=CELLS_TRAIN_SAMPLES,
        mpp=config["cells"]["mpp"],
        epochs=config["cells"]["training"]["epochs"],
        steps_per_epoch=config["cells"]["training"]["steps_per_epoch"],
    script:
        "../workflow_scripts/train_demo_stardist.py"


rule segment_cells:
    """StarDist nuclei of one slide's patches: cell table (Zarr v3), QC picture, GeoJSON."""
    input:
        unpack(segment_inputs),
    output:
        store=directory(f"{OUTDIR}/cells/{{slide}}.zarr"),
        qc=f"{OUTDIR}/qc/cells/{{slide}}.png",
        geojson=f"{OUTDIR}/cells/{{slide}}.geojson",
    log:
        f"{OUTDIR}/logs/segment_cells/{{slide}}.log",
    conda:
        "../envs/segmentation.yaml"
    threads: config["cells"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["cells"]["gpu"],
    params:
        model=CELLS_MODEL,
        mode=config["cells"]["patches"],
        mpp_override=slide_mpp_override,
        cells=CELLS_PARAMS,
        config_hash=CELLS_HASH,
    script:
        "../workflow_scripts/segment_cells.py"
