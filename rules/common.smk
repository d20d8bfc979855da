# Shared set-up: sample sheet, output layout and per-step parameter hashes.

import csv
import gc
import os

from snakemake.logging import logger

from hwsi_model.workflow_config import config_hash, require
from hwsi_model.data.layout import TRAINING_RUN, OutputLayout, parse_training_run
from hwsi_model.jobs.batches import batch_rule_name, slide_batches
from hwsi_model.model.packaged_llm import PACKAGED_LLMS
from hwsi_model.training.stage_config import resolve_llm_tuning
from hwsi_model.samples import missing_files, read_sample_sheet, usable_slides

# Planning a large cohort creates millions of objects (jobs, files, rules); each full collection
# of Python's cyclic garbage collector scans them all, so with the default thresholds its cost
# grows faster than the cohort (benchmarks/RESULTS.md, "Planning"). Snakemake's plan holds few
# reference cycles: collect less often in this process (the jobs run in their own).
gc.freeze()
gc.set_threshold(50_000, 20, 100)

SAMPLES = read_sample_sheet(config["samples"])
# Every output path comes from the layout (hwsi_model/data/layout.py).
OUT = OutputLayout(config["outdir"])
# A slide whose file is missing keeps its finished outputs; what still needs the file leaves it
# out (the manifest lists it in failures.tsv) instead of stopping the plan.
MISSING = missing_files(SAMPLES)
TILED = usable_slides(SAMPLES, MISSING, OUT.tiles)
TILED_SET = set(TILED)
CACHED = usable_slides(SAMPLES, MISSING, OUT.cache)
CACHED_SET = set(CACHED)
UNPLANNED = {s: p for s, p in MISSING.items() if s not in CACHED_SET}  # in failures.tsv
for _sid, _path in MISSING.items():
    logger.warning(
        f"slide '{_sid}': {_path} (sample sheet {config['samples']}) does not exist: its "
        "finished outputs are kept, it is left out of the steps that still need the file; "
        "restore the file or remove its row"
    )
TISSUE_CFG = config["tissue"]
# Detection parameters only: the patch threshold belongs to the tiling step.
TISSUE_DETECT_CFG = {k: v for k, v in TISSUE_CFG.items() if k != "min_tissue_fraction"}

# A change of one of these values re-runs the step (and what depends on it), nothing else.
TISSUE_HASH = config_hash(TISSUE_DETECT_CFG)
TILES_HASH = config_hash(
    {
        "mpp": config["mpp"],
        "patch_size": config["patch_size"],
        "region_size": config["region_size"],
        "mpp_tolerance": config["mpp_tolerance"],
        "min_tissue_fraction": TISSUE_CFG["min_tissue_fraction"],
    }
)

CELLS = config["cells"]
# "demo": a StarDist model trained by the workflow on the demo cohort's masks.
CELLS_MODEL = OUT.model("stardist_demo") if CELLS["model"] == "demo" else CELLS["model"]
CELLS_TRAIN_SAMPLES = CELLS["training"]["samples"] or config["samples"]


def demo_stardist_inputs(wildcards):
    """The ground-truth index and the slides it names; not the sample sheet itself, so that
    appending slides to the sheet does not retrain the model (and re-segment every slide).
    """
    index = require(config, "cells.training.gt_index")
    if not os.path.exists(index):
        return {"gt_index": index}
    with open(index, newline="") as f:
        ids = sorted({row["slide_id"] for row in csv.DictReader(f)})
    same = CELLS_TRAIN_SAMPLES == config["samples"]
    sheet = SAMPLES if same else read_sample_sheet(CELLS_TRAIN_SAMPLES)
    return {"gt_index": index, "slides": [sheet[i].path for i in ids if i in sheet]}


# What the cell table depends on (besides the model and the tiles).
CELLS_PARAMS = {
    k: CELLS[k]
    for k in (
        "mpp",
        "patches",
        "context_um",
        "block",
        "prob_thresh",
        "nms_thresh",
        "min_hematoxylin",
    )
}
CELLS_HASH = config_hash({"model": CELLS["model"], **CELLS_PARAMS})

EMBED = config["embed"]
SELECTION = EMBED["selection"]
# "demo": a tiny random ViT built by the workflow (no pretrained weights are downloaded).
ENCODER_CHECKPOINT = (
    OUT.model("tiny_vit") if EMBED["checkpoint"] == "demo" else EMBED["checkpoint"]
)
# Query "prompts" without a query_file: rule embed_prompts embeds the prompt bank with the
# encoder's text tower, and the selection reads that file.
TEXT_QUERIES = SELECTION["query"] == "prompts" and not SELECTION["query_file"]
if TEXT_QUERIES:
    SELECTION = {**SELECTION, "query_file": OUT.selection_queries}
EXTRACT_PARAMS = {
    k: EMBED[k] for k in ("num_workers", "rows_per_item", "device", "precision")
}
# Precision changes the numbers (bf16/fp16 autocast); workers, batch rows and device do not.
EMBED_HASH = config_hash(
    {
        "encoder": EMBED["encoder"],
        "checkpoint": EMBED["checkpoint"],
        "precision": EMBED["precision"],
        "tiles": TILES_HASH,
    }
)
# The prompt bank counts only where it is used (query "prompts"), so its default changes no
# other run's selection.
SELECTION_HASHED = {
    k: v
    for k, v in SELECTION.items()
    if k != "prompts" or SELECTION["query"] == "prompts"
}
SELECT_HASH = config_hash(SELECTION_HASHED)
# Recorded in the cell-embedding store (its inputs carry the selection and cells hashes).
CELL_EMB_HASH = config_hash({"embed": EMBED_HASH, "top_k": SELECTION["top_k"]})
CACHE_HASH = config_hash(
    {"embed": EMBED_HASH, "selection": SELECTION_HASHED, "cells": CELLS_HASH}
)

# What the two per-slide jobs run with (hwsi_model/jobs: PrepareSettings, ExtractSettings).
PREPARE_SETTINGS = {
    "tissue": TISSUE_DETECT_CFG,
    **{k: config[k] for k in ("mpp", "patch_size", "region_size", "mpp_tolerance")},
    "min_tissue_fraction": TISSUE_CFG["min_tissue_fraction"],
    "tissue_hash": TISSUE_HASH,
    "tiles_hash": TILES_HASH,
}
EXTRACT_SETTINGS = {
    "encoder": EMBED["encoder"],
    "checkpoint": ENCODER_CHECKPOINT,
    "extract": EXTRACT_PARAMS,
    "selection": SELECTION,
    "cells_model": CELLS_MODEL,
    "cells": CELLS_PARAMS,
    "hashes": {
        "embeddings": EMBED_HASH,
        "selection": SELECT_HASH,
        "cells": CELLS_HASH,
        "cell_embeddings": CELL_EMB_HASH,
        "cache": CACHE_HASH,
    },
}


wildcard_constraints:
    slide=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    batch=r"[A-Za-z0-9_-]+\.\d+",
    packaged="|".join(PACKAGED_LLMS),


def slide_path(wildcards):
    return SAMPLES[wildcards.slide].path


def slide_mpp_override(wildcards):
    """Sample-sheet mpp (um/px) or 0 when the file's resolution is to be used."""
    return SAMPLES[wildcards.slide].mpp or 0


# embed.slides_per_job > 1: each batch of N consecutive rows of a cohort has two jobs (rules
# prepare_batch_* and extract_batch_*, one per batch) that run their slides in one process
# and declare every slide's outputs: the interpreter, torch, TensorFlow and the models are
# paid once per batch, and Snakemake plans two jobs per N slides instead of two per slide.
BATCHED = EMBED["slides_per_job"] > 1
BATCHES = slide_batches(SAMPLES, EMBED["slides_per_job"]) if BATCHED else {}


def batch_members(batch, usable):
    """[slide_id, path, mpp (0: the file's)] of a batch's slides whose file exists and which
    are in ``usable`` (a change of the list re-runs the batch, whose steps keep what is current).
    """
    return [
        [s, SAMPLES[s].path, SAMPLES[s].mpp or 0]
        for s in BATCHES[batch]
        if s in usable and s not in MISSING
    ]


def batch_outputs(job, ids):
    """Every output of the slides' ``prepare`` or ``extract`` job (OutputLayout.job_outputs);
    update(): kept when the job re-runs, so that a step still current is not redone.

    Kind by kind, the kinds other jobs and the default targets request first (grids, caches,
    QC pictures): Snakemake finds a requested file among a rule's outputs by matching them in
    order, compiling a regular expression for each (``Rule.is_producer``), so the kinds after
    them are never compiled (benchmarks/RESULTS.md, "Planning").
    """
    kinds = list(zip(*(OUT.job_outputs(job, s) for s in ids)))
    first = ids[0]
    requested = {
        OUT.tiles(first),
        OUT.qc("tiling", first),
        OUT.cache(first),
        OUT.qc("cells", first),
    }
    kinds.sort(key=lambda kind: kind[0][0] not in requested)
    return [
        update(directory(path) if folder else path)
        for kind in kinds
        for path, folder in kind
    ]


def batch_rule(kind, batch):
    """The name of a batch's rule. Resources and threads that a profile sets for ``kind``
    (``prepare_batch``, ``extract_batch``: the rules' names are generated, so a profile names the
    kind) apply to each of its rules. Snakemake keeps --set-resources/--set-threads by rule name
    in these mappings and applies them when the rule is defined, just after this call.
    """
    name = batch_rule_name(kind, batch)
    settings = workflow.resource_settings
    for parsed in (
        settings._parsed_overwrite_resources,
        settings._parsed_overwrite_threads,
    ):
        if kind in parsed and name not in parsed:
            parsed[name] = parsed[kind]
    return name


def encoder_inputs():
    """The encoder folder when the workflow builds it (demo)."""
    return {"encoder": ENCODER_CHECKPOINT} if EMBED["checkpoint"] == "demo" else {}


def model_inputs():
    """The encoder and StarDist folders when the workflow builds them (demo), and the prompt
    queries when the encoder's text tower makes them."""
    inputs = encoder_inputs()
    if CELLS["model"] == "demo":
        inputs["stardist"] = CELLS_MODEL
    if TEXT_QUERIES:
        inputs["queries"] = OUT.selection_queries
    return inputs


def all_outputs():
    return [
        OUT.manifest,
        OUT.evaluation,
        *expand(OUT.qc("cells", "{slide}"), slide=CACHED),
        *expand(OUT.tiles("{slide}"), slide=TILED),
        *expand(OUT.qc("tiling", "{slide}"), slide=TILED),
        OUT.tiling_summary,
    ]


# Training (rules/training.smk): one rule for every run, training/{run}/ with run "stageN"
# (the method) or "baselines/{flat,flat_cells,none}/stageN".
TRAIN = config["training"]


def train_llm():
    """The LLM folder; "demo": the tiny causal LM the workflow builds (nothing downloaded); a
    packaged name ("smollm2"): the folder the workflow converts from its installed GGUF.
    """
    llm = require(config, "training.llm")
    if llm == "demo":
        return OUT.model("tiny_llm")
    return OUT.model(llm) if llm in PACKAGED_LLMS else llm


def train_run(wildcards):
    """(stage, baseline) of the {run} wildcard; baseline None for the method."""
    return parse_training_run(wildcards.run)


def train_inputs(wildcards):
    """The manifest and the run's text; the previous stage's folder (a baseline: flat stage 2
    and text-only stage 3 start from the method's stage 1, flat stage 3 from its stage 2; the
    same for flat_cells);
    the demo LLM when the workflow builds it."""
    stage, baseline = train_run(wildcards)
    inputs = {"manifest": OUT.manifest, "reports": require(config, "training.reports")}
    if stage == 3:
        inputs["instructions"] = require(config, "training.instructions")
    if stage > 1 and baseline is None:
        inputs["init"] = OUT.stage_path(stage - 1, "model")
    elif baseline in ("flat", "flat_cells") and stage == 3:
        inputs["init"] = OUT.stage_path(2, "model", baseline)
    elif baseline:
        inputs["init"] = OUT.stage_path(1, "model")
    if (stage == 2 or baseline) and train_llm() != require(config, "training.llm"):
        inputs["llm"] = train_llm()  # a folder the workflow builds
    return inputs


def train_resource(name):
    """A resource of the run's stage (training.resources.stageN; a baseline takes its stage's)."""

    def get(wildcards):
        return TRAIN["resources"][f"stage{train_run(wildcards)[0]}"][name]

    return get


def train_settings(wildcards):
    """The run's StageConfig keys: training.stageN; a baseline adds its visual input and drops
    the auxiliary losses (they need the hierarchy)."""
    stage, baseline = train_run(wildcards)
    settings = {**TRAIN[f"stage{stage}"], "stage": stage}
    # Only stage 3 tunes the LLM: stages 1-2 keep their settings (and outputs) when it changes.
    tuning = settings.pop("llm_tuning", "auto")
    if stage == 3:
        settings["llm_tuning"] = resolve_llm_tuning(
            tuning, require(config, "training.llm")
        )
    if baseline:
        settings.update(visual_input=baseline, aux_losses=False)
    return settings


def train_params(wildcards):
    """What a run reads besides its inputs: the stage-1 model block and text encoder, the LLM
    folder of stage 2 and of the baselines (stage 3 of the method keeps its folder's).
    """
    stage, baseline = train_run(wildcards)
    return {
        "model": TRAIN["model"] if stage == 1 else None,
        "text_encoder": TRAIN["text_encoder"] if stage == 1 else None,
        "llm": train_llm() if stage == 2 or baseline else None,
    }


# Evaluation (rules/evaluate.smk).
EVAL = config["evaluation"]
#: Baselines by their name in the report (training.baselines -> model folders).
BASELINE_NAMES = {"flat": "flat", "flat_cells": "flat_cells", "none": "text_only"}


def evaluation_inputs(wildcards):
    """The method's stage-1 and stage-3 folders, the baselines' stage-3 folders, test files,
    the excluded slides (failures.tsv, named in the report)."""
    inputs = {
        "manifest": OUT.manifest,
        "failures": OUT.failures,
        "reports": require(config, "training.reports"),
        "stage1": OUT.stage_path(1, "model"),
        "model": OUT.stage_path(3, "model"),
        "test": EVAL["test"],
        "train": (
            require(config, "training.instructions")
            if EVAL["majority_baseline"]
            else []
        ),
        "curves": [OUT.stage_path(n, "loss.png") for n in (1, 2, 3)],
    }
    for b in TRAIN["baselines"]:
        inputs[f"baseline_{b}"] = OUT.stage_path(3, "model", b)
    if EVAL["annotations"]:
        inputs["annotations"] = EVAL["annotations"]
    return inputs


def demo_llm_inputs(wildcards):
    """The training text the demo LLM is built from (only the manifest's training split)."""
    return {
        "reports": require(config, "training.reports"),
        "instructions": require(config, "training.instructions"),
        "manifest": OUT.manifest,
    }


def log_excluded_slides():
    """End of a run: name the slides excluded after a failure (their placeholders)."""
    from hwsi_model.data.check import excluded_slides

    excluded = excluded_slides(OUT.outdir)
    for sid, failure in sorted(excluded.items()):
        logger.warning(f"slide '{sid}' excluded: {failure.describe()}")
    if excluded:
        logger.warning(
            f"{len(excluded)} slide(s) excluded (listed in {OUT.failures}); fix their input "
            f"and re-run, or `hwsi retry-failed {OUT.outdir}` to try them all again"
        )
