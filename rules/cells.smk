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
