#!/usr/bin/env bash
# The GPU check of issue 17 item 7: device, the conv/pool/norm/dropout/train-step tests on the
# GPU, and the training table (LWLS CNN, ResNet-18 CIFAR, MobileNetV2 CIFAR; jaxcnn vs PyTorch
# CUDA eager; float32 and bfloat16) written to <out>/<gpu-name-slug>.md and .json.
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh                  # on a GPU machine, < 8 min
#   PYTHONPATH=. bash benchmarks/gpu_check.sh --out DIR        # results elsewhere (default benchmarks/results)
#   PYTHONPATH=. bash benchmarks/gpu_check.sh --dry-run        # the same steps on CPU, tiny, into a temp folder
#
# Needs only what the GPU image has (jax with CUDA, torch with CUDA, torchvision, flax, optax,
# numpy, pytest); installs nothing, uses no network. Test files whose imports are missing there
# (scipy, hypothesis) are skipped by name (benchmarks/gpu_env.py). Exits non-zero on any failure.
#
# JAX platform: tests/conftest.py does os.environ.setdefault("JAX_PLATFORMS", "cpu") and forces
# 8 host devices. The GPU run exports JAX_PLATFORMS=cuda, so setdefault keeps it and JAX fails
# loudly instead of quietly testing the CPU; the tests that need 8 devices (pmap, meshes,
# synchronized statistics) are deselected, since one GPU is one device. The tests also run with
# JAX_DEFAULT_MATMUL_PRECISION=highest: their tolerances are float32's, and JAX on a GPU with
# tensor cores otherwise computes float32 convolutions in TF32. The table keeps both libraries'
# defaults (it records them). The dry run exports JAX_PLATFORMS=cpu.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

DRY_RUN=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
DRY=()
if [ "$DRY_RUN" = 1 ]; then
  export JAX_PLATFORMS=cpu
  DRY=(--dry-run)
  OUT="${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
  TEST_TIMEOUT=120; TABLE_TIMEOUT=120
else
  export JAX_PLATFORMS=cuda
  OUT="${OUT:-benchmarks/results}"
  TEST_TIMEOUT=200; TABLE_TIMEOUT=330
fi
START=$SECONDS
step() { echo; echo "=== gpu_check [$((SECONDS - START)) s]: $*"; }
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

step "1/3 device and versions${DRY[*]:+ (dry run: CPU)}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi failed (continuing)"
else
  echo "nvidia-smi: not found"
fi
"$PY" -m benchmarks.gpu_env info || fail "jax or torch did not start with JAX_PLATFORMS=$JAX_PLATFORMS (no GPU here? --dry-run runs on CPU)"

step "2/3 tests of conv, pool, norm, dropout and the train step"
TEST_ARGS=()
while IFS= read -r line; do TEST_ARGS+=("$line"); done < <("$PY" -m benchmarks.gpu_env tests "${DRY[@]}")
[ ${#TEST_ARGS[@]} -gt 0 ] || fail "no test selection"
echo "pytest ${TEST_ARGS[*]}"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout "$TEST_TIMEOUT" "$PY" -m pytest -x -q -p no:cacheprovider "${TEST_ARGS[@]}" \
  || fail "tests (exit $?; 124 = over ${TEST_TIMEOUT} s)"

step "3/3 training table, jaxcnn vs PyTorch eager, float32 and bfloat16, into $OUT"
timeout "$TABLE_TIMEOUT" "$PY" -m benchmarks.gpu_table --out "$OUT" "${DRY[@]}" \
  || fail "training table (exit $?; 124 = over ${TABLE_TIMEOUT} s)"

step "done in $((SECONDS - START)) s; results under $OUT"
