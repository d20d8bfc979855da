rule train_demo_stardist:
    """A small StarDist2D trained on the demo cohort's ground-truth nucleus masks."""
    input:
        unpack(demo_stardist_inputs),
    output:
        directory(OUT.model("stardist_demo")),
    log:
        OUT.log("train_demo_stardist"),
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
        store=directory(OUT.cells("{slide}")),
        qc=OUT.qc("cells", "{slide}"),
        geojson=OUT.cells_geojson("{slide}"),
    log:
        OUT.log("segment_cells", "{slide}"),
    benchmark:
        OUT.benchmark("segment_cells", "{slide}")
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
