#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu/bench_gpu.py): patch extraction, a cohort's GPU busy fraction
# and the stage-3 training step, in one process; JSON + Markdown under $OUT, else
# benchmarks/gpu/out/. Finishes within 8 minutes on one H200.
#
#   benchmarks/gpu/run.sh [--rehearse] [bench_gpu.py options]
#
# On the GPU machine (Python 3.12, CUDA torch, no network) the wheels of .whl/ (from
# benchmarks/gpu/fetch_wheels.sh, carried along) are installed into /tmp/site first.
# --rehearse (or REHEARSE=1) runs everything on CPU with tiny shapes in the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
REHEARSE=${REHEARSE:-0}
args=()
for a in "$@"; do
  if [[ $a == --rehearse ]]; then REHEARSE=1; else args+=("$a"); fi
done
out=${OUT:-benchmarks/gpu/out}
mkdir -p "$out"
if [[ $REHEARSE == 1 ]]; then
  py=${PYTHON:-.venv/bin/python}
  args+=(--rehearse)
else
  py=${PYTHON:-python3}
  if compgen -G ".whl/*.whl" >/dev/null; then
    t0=$SECONDS
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    echo "installed $(ls .whl/*.whl | wc -l) wheels into /tmp/site in $((SECONDS - t0)) s"
  fi
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}  # the workflow's progress bars, rarely
exec "$py" benchmarks/gpu/bench_gpu.py --out "$out" "${args[@]}"
