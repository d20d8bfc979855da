# hwsi: hierarchical whole-slide-image pipeline (MLLM-HWSI).
#   snakemake --cores N                        # config.yaml (the demo cohort by default)
#   snakemake --cores N --configfile my.yaml   # your cohort
# Per slide: tissue -> patch/region grid -> patch embeddings -> selection -> nuclei ->
# cell embeddings -> multi-scale cache; then the cohort manifest, DeepSpeed training of the
# three stages and their evaluation. See README.md for outputs.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "hwsi_model/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/tiling.smk"
include: "rules/cells.smk"
include: "rules/embed.smk"
include: "rules/training.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_outputs(),


onsuccess:
    log_excluded_slides()
