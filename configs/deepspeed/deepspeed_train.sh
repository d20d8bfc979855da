#!/usr/bin/env bash
# Multi-node training of one stage under SLURM with the DeepSpeed launcher: a hostfile
# (`host slots=N`) is built from the allocation, then one `deepspeed` launcher per node starts one
# process per GPU (--no_ssh: srun starts the launchers, no pdsh or ssh between nodes needed).
#   sbatch -N 2 --ntasks-per-node 1 --gpus-per-node 4 --cpus-per-task 32 --mem 256G -t 24:00:00 \
#     configs/deepspeed/deepspeed_train.sh --stage 3 --manifest results/manifest.csv \
#       --reports cohort/reports.jsonl --instructions wsibench/train.json \
#       --init results/training/stage2/model --out results/training/stage3 \
#       --config configs/deepspeed/stage3_gpu.yaml --resume
# With passwordless ssh and pdsh on the nodes, DS_LAUNCHER=pdsh runs one `deepspeed` from this
# node instead (it reaches the others over ssh). HOSTFILE sets where the hostfile goes (default:
# hostfile-JOBID in the submission folder, which the nodes must share).
#SBATCH --job-name=hwsi-train-ds
#SBATCH --output=hwsi-train-ds-%j.log
set -euo pipefail
: "${SLURM_JOB_ID:?run this script with sbatch (or inside salloc)}"
HOSTFILE=${HOSTFILE:-hostfile-${SLURM_JOB_ID}}
MASTER_PORT=${MASTER_PORT:-29500}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/hwsi/torch_extensions}
# One "host slots=N" line per node; N = GPUS_PER_NODE if given, else SLURM's GPUs per node.
python -m hwsi_model.training.launch hostfile "$HOSTFILE" ${GPUS_PER_NODE:+--slots "$GPUS_PER_NODE"}
MASTER_ADDR=$(head -n1 "$HOSTFILE" | cut -d' ' -f1)
COMMON=(--hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT"
        --module hwsi_model.training.entry)
if [[ "${DS_LAUNCHER:-srun}" == pdsh ]]; then
  deepspeed --launcher pdsh "${COMMON[@]}" "$@"
else
  ARGS=$(printf '%q ' "${COMMON[@]}" "$@")
  srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \
    "deepspeed --no_ssh --node_rank=\${SLURM_NODEID} ${ARGS}"
fi
