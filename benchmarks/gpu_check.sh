#!/usr/bin/env bash
# One-shot GPU check, for a machine with an NVIDIA GPU and no network, in under 8 minutes:
#
#   1. install xcnn from this working tree (--no-deps --no-index) and the wheels brought
#      along in wheels/ (bash benchmarks/fetch_gpu_wheels.sh, run beforehand with network)
#      into .gpu-site/, leaving the machine's own Python untouched;
#   2. run the test suite on CuPy (the tests-cupy session of noxfile.py);
#   3. time xcnn on CuPy against PyTorch CUDA (benchmarks/bench_gpu.py) and write the
#      table, with date and GPU name, into docs/benchmarks.md (section "GPU").
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: skips what needs a GPU, says so
#
# The machine's Python must already have CuPy 14, NumPy, PyTorch (CUDA), pytest and
# hypothesis; PYTHON= picks the interpreter. Every step has its own time limit. Logs
# and the updated docs/benchmarks.md go to $OUT when it is set (else .gpu-check/).
# The exit status is 0 only when every step that ran passed.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
case "${1:-}" in
    "") ;;
    --dry-run) DRY=1 ;;
    *) echo "gpu_check.sh: unknown option '$1' (the only one is --dry-run)" >&2; exit 2 ;;
esac

PY=${PYTHON:-$(command -v python || command -v python3 || true)}
if [ -z "$PY" ]; then
    echo "gpu_check.sh: no python or python3 on PATH; set PYTHON=/path/to/python" >&2
    exit 2
fi
LOGS=${OUT:-$ROOT/.gpu-check}
SITE=$ROOT/.gpu-site
mkdir -p "$LOGS"
START=$SECONDS
FAILED=()

say() { echo "gpu_check [$((SECONDS - START)) s]: $*"; }

# Run "$@" with a time limit of $1 seconds, output to the terminal and to $LOGS/$2.log.
step() {
    local limit=$1 name=$2 rc
    shift 2
    say "$name (limit ${limit} s): $*"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "$name: stopped at its time limit of ${limit} s"
    fi
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$name (exit $rc)")
    fi
    return "$rc"
}

# -- 0. is there a GPU? ------------------------------------------------------------------
GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU_NAME=$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
# import cupy succeeds without a GPU: ask the runtime for its devices.
CUPY_DEVICES=$(timeout 120 "$PY" -c "
try:
    import cupy
except ImportError:
    print('none (CuPy not importable)')
else:
    try:
        print(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:
        print(f'none ({type(error).__name__}: {error})')
" 2>/dev/null | tail -n 1)
TORCH_CUDA=$(timeout 120 "$PY" -c \
    "import torch; print(torch.cuda.is_available())" 2>/dev/null | tail -n 1)
HAVE_GPU=0
if [ -n "$GPU_NAME" ] && [[ "$CUPY_DEVICES" =~ ^[1-9][0-9]*$ ]] && [ "$TORCH_CUDA" = "True" ]; then
    HAVE_GPU=1
fi
say "python: $PY ($("$PY" --version 2>&1)); GPU: ${GPU_NAME:-none}; CuPy devices:" \
    "${CUPY_DEVICES:-none (the probe failed)}; torch CUDA: ${TORCH_CUDA:-torch not importable}"
if [ "$HAVE_GPU" -eq 0 ]; then
    if [ "$DRY" -eq 0 ]; then
        say "no usable GPU here (needs nvidia-smi, CuPy with a device and CUDA PyTorch);" \
            "run with --dry-run to check the script without one"
        exit 2
    fi
    say "dry run without a GPU: the CuPy tests are skipped and the benchmark runs on" \
        "NumPy / PyTorch CPU, writing to $LOGS/benchmarks.md instead of docs/benchmarks.md"
fi

# -- 1. install: the wheels brought along, then xcnn itself, all offline ------------------
rm -rf "$SITE"
mkdir -p "$SITE"
shopt -s nullglob
WHEELS=("$ROOT"/wheels/*.whl)
shopt -u nullglob
if [ "${#WHEELS[@]}" -gt 0 ]; then
    if ! step 120 install-wheels "$PY" -m pip install --no-deps --no-index --no-compile \
        --disable-pip-version-check --target "$SITE" "${WHEELS[@]}"; then
        # Without pip, a wheel is a zip of what goes into site-packages: unpack it there.
        say "pip could not install the wheels; unpacking them into $SITE instead"
        FAILED=("${FAILED[@]:0:${#FAILED[@]}-1}")  # the unpacking decides instead
        for wheel in "${WHEELS[@]}"; do
            "$PY" -m zipfile -e "$wheel" "$SITE" || FAILED+=("unpack $(basename "$wheel")")
        done
    fi
else
    say "no wheels/ folder: packages missing from this Python stay missing" \
        "(bash benchmarks/fetch_gpu_wheels.sh fetches them where there is network)"
fi
if step 120 install-xcnn "$PY" -m pip install --no-deps --no-index --no-build-isolation \
    --no-compile --disable-pip-version-check --target "$SITE" "$ROOT"; then
    export PYTHONPATH=$SITE
else
    say "installing xcnn failed (no pip or setuptools in this Python?); using the working tree"
    FAILED=("${FAILED[@]:0:${#FAILED[@]}-1}")  # the same code, imported from the tree
    export PYTHONPATH=$SITE:$ROOT
fi
step 60 imports "$PY" -c "import xcnn, array_api_compat, safetensors, threadpoolctl, tqdm
import array_api_strict, torchinfo
print('xcnn', xcnn.__version__, 'from', xcnn.__file__)"

# -- 2. the test suite on CuPy -------------------------------------------------------------
if [ "$HAVE_GPU" -eq 1 ]; then
    step 270 tests-cupy env XCNN_BACKEND=cupy XCNN_TEST_NAMESPACES=cupy \
        "$PY" -m pytest tests -q -p no:cacheprovider --durations=10
else
    say "tests-cupy: skipped (no GPU)"
fi

# -- 3. the benchmark ----------------------------------------------------------------------
if [ "$HAVE_GPU" -eq 1 ]; then
    step 170 bench-gpu env XCNN_BACKEND=cupy "$PY" benchmarks/bench_gpu.py \
        --out "$ROOT/docs/benchmarks.md"
    cp "$ROOT/docs/benchmarks.md" "$LOGS/benchmarks.md"
else
    cp "$ROOT/docs/benchmarks.md" "$LOGS/benchmarks.md"
    step 170 bench-dry-run env XCNN_BACKEND=numpy "$PY" benchmarks/bench_gpu.py \
        --backend numpy --device cpu --rounds 1 --min-seconds 0.05 --out "$LOGS/benchmarks.md"
fi

# -- summary -------------------------------------------------------------------------------
if [ "${#FAILED[@]}" -gt 0 ]; then
    say "done; failed: ${FAILED[*]}; logs in $LOGS"
    exit 1
fi
say "done, every step passed; logs in $LOGS"
