#!/usr/bin/env bash
# Download, here, the wheels that benchmarks/gpu/run.sh installs on the GPU machine (Python 3.12,
# manylinux x86_64, no network there) into .whl/ at the repo root (git-ignored). Versions follow
# requirements/constraints.txt (the project's pins) and the local venv for their dependencies.
# Carry them with the device tool's `carry: [".whl"]`; at most 64 MiB together.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WHEELS=(
  zarr==3.1.6 donfig==0.8.1.post1 google-crc32c==1.9.0 numcodecs==0.16.6
  imagecodecs==2026.3.6 tifffile==2026.3.3
  openslide-python==1.4.7 openslide-bin==4.0.1.2
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
)
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for w in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$w"
done
du -ch .whl/*.whl
