# Training of the three MLLM-HWSI stages with DeepSpeed on the cached tensors (hwsi_model.training).
# Each stage starts from the previous stage's model folder. The DeepSpeed checkpoints live next to
# the declared outputs (training/stageN/checkpoints, not an output), so a killed job resumes from
# its last checkpoint when `training.resume` is true. One GPU or CPU: one process (gloo on CPU);
# `gpu: N > 1`: torchrun over N local GPUs; several nodes: configs/deepspeed/srun_train.sh.


rule build_demo_llm:
    """A tiny Qwen2-shaped causal LM with a tokenizer trained on the cohort's text, pretrained on
    the training slides' questions, answers and reports as text only (demo only)."""
    input:
        reports=TRAIN["reports"],
        instructions=TRAIN["instructions"],
        manifest=OUT.manifest,
    output:
        directory(OUT.model("tiny_llm")),
    log:
        OUT.log("build_demo_llm"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    params:
        seed=config["demo"]["seed"],
    script:
        "../workflow_scripts/build_demo_llm.py"


rule train_stage1:
    """Stage 1: hierarchical cross-modal alignment (CCAF, region/slide encoders, projectors)."""
    input:
        manifest=OUT.manifest,
        reports=TRAIN["reports"],
    output:
        **stage_outputs(1),
    log:
        OUT.log("train", "stage1"),
    conda:
        "../envs/hwsi.yaml"
    threads: TRAIN["stage1"]["threads"]
    resources:
        gpu=TRAIN["stage1"]["gpu"],
        mem_mb=TRAIN["stage1"]["mem_mb"],
        runtime=TRAIN["stage1"]["runtime"],
    params:
        stage=1,
        settings=stage_settings(1),
        model=TRAIN["model"],
        llm=None,
        text_encoder=TRAIN["text_encoder"],
        resume=TRAIN["resume"],
        instruction_format=TRAIN["instruction_format"],
    script:
        "../workflow_scripts/train_stage.py"


rule train_stage2:
    """Stage 2: V-L projectors into the frozen LLM on the reports (L_LM + auxiliary losses)."""
    input:
        unpack(llm_input),
        manifest=OUT.manifest,
        reports=TRAIN["reports"],
        init=OUT.stage_path(1, "model"),
    output:
        **stage_outputs(2),
    log:
        OUT.log("train", "stage2"),
    conda:
        "../envs/hwsi.yaml"
    threads: TRAIN["stage2"]["threads"]
    resources:
        gpu=TRAIN["stage2"]["gpu"],
        mem_mb=TRAIN["stage2"]["mem_mb"],
        runtime=TRAIN["stage2"]["runtime"],
    params:
        stage=2,
        settings=stage_settings(2),
        model=None,
        llm=TRAIN_LLM,
        text_encoder=None,
        resume=TRAIN["resume"],
        instruction_format=TRAIN["instruction_format"],
    script:
        "../workflow_scripts/train_stage.py"


rule train_stage3:
    """Stage 3: instruction tuning of the projectors + LLM (LoRA or full)."""
    input:
        manifest=OUT.manifest,
        reports=TRAIN["reports"],
        instructions=TRAIN["instructions"],
        init=OUT.stage_path(2, "model"),
    output:
        **stage_outputs(3),
    log:
        OUT.log("train", "stage3"),
    conda:
        "../envs/hwsi.yaml"
    threads: TRAIN["stage3"]["threads"]
    resources:
        gpu=TRAIN["stage3"]["gpu"],
        mem_mb=TRAIN["stage3"]["mem_mb"],
        runtime=TRAIN["stage3"]["runtime"],
    params:
        stage=3,
        settings=stage_settings(3),
        model=None,
        llm=None,
        text_encoder=None,
        resume=TRAIN["resume"],
        instruction_format=TRAIN["instruction_format"],
    script:
        "../workflow_scripts/train_stage.py"


rule train_baseline:
    """A baseline for the evaluation (training.baselines): "flat" (stages 2-3) or "none" (text
    only, stage 3), trained like the method from its stage-1 folder with the same LLM.
    """
    input:
        unpack(llm_input),
        manifest=OUT.manifest,
        reports=TRAIN["reports"],
        instructions=TRAIN["instructions"],
        init=baseline_init,
    output:
        **stage_outputs("{stage}", "{baseline}"),
    log:
        OUT.log("train", "baseline_{baseline}_stage{stage}"),
    wildcard_constraints:
        baseline="flat|none",
        stage="2|3",
    conda:
        "../envs/hwsi.yaml"
    threads: TRAIN["stage3"]["threads"]
    resources:
        gpu=TRAIN["stage3"]["gpu"],
        mem_mb=TRAIN["stage3"]["mem_mb"],
        runtime=TRAIN["stage3"]["runtime"],
    params:
        stage=lambda wc: int(wc.stage),
        settings=baseline_settings,
        model=None,
        llm=TRAIN_LLM,
        text_encoder=None,
        resume=TRAIN["resume"],
        instruction_format=TRAIN["instruction_format"],
    script:
        "../workflow_scripts/train_stage.py"
