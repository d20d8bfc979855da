# Training of the three MLLM-HWSI stages with DeepSpeed on the cached tensors (hwsi_model.training).
# Each stage starts from the previous stage's model folder. The DeepSpeed checkpoints live next to
# the declared outputs (training/stageN/checkpoints, not an output), so a killed job resumes from
# its last checkpoint when `training.resume` is true. One GPU or CPU: one process (gloo on CPU);
# `gpu: N > 1`: torchrun over N local GPUs; several nodes: configs/deepspeed/srun_train.sh.


rule build_demo_llm:
    """A tiny Qwen2-shaped causal LM with a tokenizer trained on the training split's text,
    pretrained on its questions, answers and reports as text only (demo only)."""
    input:
        unpack(demo_llm_inputs),
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


rule convert_packaged_llm:
    """A pretrained LLM installed as a GGUF inside a Python package (training.llm: smollm2),
    converted once into a Hugging Face folder (hwsi_model/model/packaged_llm.py)."""
    output:
        directory(OUT.model("{packaged}")),
    log:
        OUT.log("convert_packaged_llm", "{packaged}"),
    localrule: True
    conda:
        "../envs/hwsi.yaml"
    script:
        "../workflow_scripts/convert_packaged_llm.py"


rule train:
    """One training run: a stage of the method (training/stageN: 1 alignment, 2 V-L projectors
    into the frozen LLM, 3 instruction tuning) or of a baseline for the evaluation
    (training/baselines/{flat,flat_cells}/stage2-3, training/baselines/none/stage3), from the previous
    stage's folder, with the stage's settings (training.stageN) and resources
    (training.resources.stageN)."""
    input:
        unpack(train_inputs),
    output:
        model=directory(OUT.training("{run}", "model")),
        losses=OUT.training("{run}", "loss.csv"),
        plot=OUT.training("{run}", "loss.png"),
        metrics=OUT.training("{run}", "metrics.json"),
    log:
        OUT.log("train", "{run}"),
    wildcard_constraints:
        run=TRAINING_RUN,
    conda:
        "../envs/hwsi.yaml"
    threads: train_resource("threads")
    resources:
        gpu=train_resource("gpu"),
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    params:
        settings=train_settings,
        run=train_params,
        resume=TRAIN["resume"],
        instruction_format=TRAIN["instruction_format"],
    script:
        "../workflow_scripts/train_stage.py"
