#!/usr/bin/env bash
# Every CUDA check that needs no TensorRT, in one command, on an NVIDIA GPU machine with PyTorch
# (CUDA build) and nvcc: the CUDA tests, benchmarks/kernels.py, and the PyTorch CUDA rows of
# benchmarks/latency.py (eager FP32 / FP16, CUDA graphs FP32 / FP16) for the shipped demo model and
# CRIS RN50 at 416 (random weights). At most 8 minutes (each step has a time limit, 480 s in all);
# every result is a file.
#
#   benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]      (default OUT_DIR: out/gpu_check)
#
# Files in OUT_DIR: machine.txt (nvidia-smi, nvcc, versions), tests.log + tests.xml (pytest),
# kernels.json + kernels.log, latency_demo.{json,md,log}, latency_r50.{json,md,log}, and
# summary.txt (each step's exit status and seconds). Exit status: 0 when every step passed, 1 when
# one failed (the others still run), 2 when this is not such a machine (no CUDA GPU, no nvcc, no
# CUDA torch): it refuses before doing anything, saying what is missing. --dry-run prints the
# steps without running them. PYTHON selects the interpreter (default: .venv/bin/python of the
# checkout when present, else python3).
set -uo pipefail
set -f  # the steps' words (pytest ids with [...]) are not file patterns

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

DRY_RUN=0
OUT=""
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
        -*) echo "gpu_check.sh: error: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) if [ -n "$OUT" ]; then echo "gpu_check.sh: error: one OUT_DIR only (see --help)" >&2; exit 2; fi
           OUT="$arg" ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
OUT="${OUT:-out/gpu_check}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# The CUDA tests that need no TensorRT: the fused kernels on the GPU (test_kernels_gpu), their nvcc
# build (test_kernels_nvcc), the PyTorch custom ops (test_kernels_torch_op), the CMake build with
# the CUDA library (test_cpp_cmake), and the PyTorch backend, which runs on CUDA when it is there.
TESTS=(tests/test_kernels_gpu.py tests/test_kernels_nvcc.py tests/test_kernels_torch_op.py tests/test_cpp_cmake.py
       "tests/test_runtime.py::test_masks_agree_with_the_pytorch_model[pytorch]"
       "tests/test_runtime.py::test_score_is_the_mean_probability_inside_the_mask[pytorch]")
LATENCY=(benchmarks/latency.py --backends torch --precisions fp32,fp16 --device cuda)
STEPS=(
    "tests|240|$PYTHON -m pytest -q -rs ${TESTS[*]} --junitxml $OUT/tests.xml"
    "kernels|60|$PYTHON benchmarks/kernels.py --out $OUT/kernels.json"
    "latency_demo|75|$PYTHON ${LATENCY[*]} --json $OUT/latency_demo.json --markdown $OUT/latency_demo.md"
    "latency_r50|105|$PYTHON ${LATENCY[*]} --config cris_r50_refcoco --json $OUT/latency_r50.json --markdown $OUT/latency_r50.md"
)

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check.sh: would check for a CUDA GPU (torch.cuda), nvcc and nvidia-smi, then run into $OUT:"
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name limit command <<<"$step"
        echo "  [$name, at most ${limit}s] $command > $OUT/$name.log"
    done
    exit 0
fi

# Refuse loudly anywhere but a CUDA machine: every check below would otherwise skip and "pass".
problems=()
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    problems+=("no CUDA GPU visible to PyTorch ($PYTHON: torch missing, a CPU-only build, or no GPU/driver)")
fi
NVCC="$(command -v nvcc || true)"
if [ -z "$NVCC" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then NVCC="$CUDA_HOME/bin/nvcc"; fi
[ -n "$NVCC" ] || problems+=("nvcc not found (put it on PATH or set CUDA_HOME)")
command -v nvidia-smi >/dev/null || problems+=("nvidia-smi not found (no NVIDIA driver)")
if [ "${#problems[@]}" -gt 0 ]; then
    echo "gpu_check.sh: error: this is not an NVIDIA GPU machine with PyTorch and nvcc:" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    echo "  nothing was run; run this on a GPU machine (see docs/benchmarks.md)" >&2
    exit 2
fi

mkdir -p "$OUT" || exit 2
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$NVCC" --version | tail -n 2
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
    git -C "$ROOT" rev-parse HEAD 2>/dev/null | sed 's/^/commit /'
} >"$OUT/machine.txt" 2>&1

status=0
: >"$OUT/summary.txt"
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    echo "gpu_check.sh: $name ..." >&2
    start=$(date +%s)
    # shellcheck disable=SC2086  # the command is a word list
    timeout "$limit" $command >"$OUT/$name.log" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - start ))
    if [ "$name" = tests ] && [ "$rc" = 0 ] && grep -q "SKIPPED.*\(no CUDA GPU\|nvcc not found\)" "$OUT/$name.log"; then
        rc=1  # a GPU test skipped on a GPU machine: the check did not happen
        echo "a CUDA test was skipped (see $OUT/$name.log)" >>"$OUT/$name.log"
    fi
    echo "$name exit=$rc seconds=$seconds" | tee -a "$OUT/summary.txt" >&2
    [ "$rc" = 0 ] || status=1
done
if [ "$status" = 0 ]; then
    echo "gpu_check.sh: all steps passed; results in $OUT" >&2
else
    echo "gpu_check.sh: FAILED steps (see $OUT/summary.txt and their logs)" >&2
fi
exit "$status"
