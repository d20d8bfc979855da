# Evaluation of the trained model next to its baselines on the held-out split
# (hwsi_model.evaluation): metrics per task family, predictions, evidence maps, HTML reports.


rule evaluate:
    """The method and the baselines on the test files: metrics.json, report.html, slide pages."""
    input:
        unpack(evaluation_inputs),
    output:
        directory(OUT.evaluation),
    log:
        OUT.log("evaluate"),
    conda:
        "../envs/hwsi.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        baselines={BASELINE_NAMES[b]: b for b in TRAIN["baselines"]},
        split=EVAL["split"],
        format=EVAL["format"],
        num_beams=EVAL["num_beams"],
        batch_size=EVAL["batch_size"],
        evidence_slides=EVAL["evidence_slides"],
        class_prompts=EVAL["class_prompts"],
        bertscore_model=EVAL["bertscore_model"],
        task_groups=EVAL["task_groups"],
        bootstrap_resamples=EVAL["bootstrap_resamples"],
        device=EVAL["device"],
    script:
        "../workflow_scripts/evaluate.py"
