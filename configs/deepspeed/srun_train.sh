#!/usr/bin/env bash
# Multi-node training of one stage under SLURM: one torchrun per node, one process per GPU.
#   sbatch -N 2 --ntasks-per-node 1 --gpus-per-node 4 --cpus-per-task 32 --mem 256G -t 24:00:00 \
#     configs/deepspeed/srun_train.sh --stage 3 --manifest results/manifest.csv \
#       --reports cohort/reports.jsonl --instructions wsibench/train.json \
#       --init results/training/stage2/model --out results/training/stage3 \
#       --config configs/deepspeed/stage3_gpu.yaml --resume
# Re-submitting the same command after a time-out continues from the last checkpoint (--resume).
#SBATCH --job-name=hwsi-train
#SBATCH --output=hwsi-train-%j.log
set -euo pipefail
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
MASTER_PORT=${MASTER_PORT:-29500}
ARGS=$(printf '%q ' "$@")
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/hwsi/torch_extensions}
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "python -m torch.distributed.run \
  --nnodes=${SLURM_NNODES:-1} --nproc_per_node=${GPUS_PER_NODE} --node_rank=\${SLURM_NODEID} \
  --rdzv_id=${SLURM_JOB_ID} --rdzv_backend=c10d --rdzv_endpoint=${MASTER_ADDR}:${MASTER_PORT} \
  -m hwsi_model.training.entry ${ARGS}"
