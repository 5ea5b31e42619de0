#!/usr/bin/env bash
# Download, here (with network), the wheels that benchmarks/gpu_check.sh installs on an
# offline GPU machine whose Python already has CuPy, NumPy, PyTorch, pytest and
# hypothesis: xcnn's own dependencies and the test extra's pure-Python packages.
#
#   bash benchmarks/fetch_gpu_wheels.sh [DEST]        # DEST defaults to wheels/
#
# DEST is ignored by git; carry it with the working tree to the GPU machine. Versions
# are pinned to those the test suite passes with here. Pillow and matplotlib (test
# extra, compiled per Python version) are left out: the tests that need them skip.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-wheels}
PY=${PYTHON:-$(command -v python || command -v python3)}
mkdir -p "$DEST"

# Pure Python: one wheel serves every Python version and platform.
"$PY" -m pip download --no-deps --only-binary=:all: --dest "$DEST" \
    "array-api-compat==1.16.0" \
    "array-api-strict==2.6.1" \
    "torchinfo==1.8.0" \
    "tqdm==4.70.1" \
    "threadpoolctl==3.8.0"

# safetensors is compiled (Rust); its abi3 wheel serves every CPython >= 3.10 on x86-64
# Linux, whatever Python runs this script.
"$PY" -m pip download --no-deps --only-binary=:all: --dest "$DEST" \
    --platform manylinux_2_17_x86_64 --implementation cp --python-version 3.10 --abi abi3 \
    "safetensors==0.8.0"

echo "fetch_gpu_wheels.sh: wheels in $DEST:"
ls -1 "$DEST"
