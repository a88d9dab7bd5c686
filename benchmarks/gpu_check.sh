#!/usr/bin/env bash
# One-call GPU check of aits's CUDA back end: build with AITS_CUDA=ON, run
# tests/test_cuda.py, print the kernel benchmark table (benchmarks/gpu_bench.py)
# and the GPU ensembles (benchmarks/ensemble.py --device cuda). About 4 minutes
# on an H200, 2.5 of them the build.
#
#   bash benchmarks/gpu_check.sh        # from anywhere; needs a CUDA torch, nvcc,
#                                       # cmake, ninja, scikit-build-core, pytest
# Environment: PYTHON (default python3), CUDAARCHS (default 90: one architecture
# builds fastest), OUT (when set, the log is written to $OUT/gpu_check.log).
# Exit status: 0 only when the build, the tests and both benchmarks succeed.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
LOGDIR=${OUT:-${TMPDIR:-/tmp}}
mkdir -p "$LOGDIR"
export PYTHONUNBUFFERED=1
exec > >(tee "$LOGDIR/gpu_check.log") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }
WORK=$(mktemp -d)  # run Python from here so the installed aits, not the source tree, is imported

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU visible', torch.cuda.is_available())"
nvcc --version | tail -n 2

step "build (AITS_CUDA=ON, CUDAARCHS=${CUDAARCHS:-90})"
SECONDS=0
if ! (cd "$REPO" && AITS_CUDA=ON CUDAARCHS=${CUDAARCHS:-90} "$PY" -m pip install -v \
        --no-build-isolation --no-deps . >"$LOGDIR/gpu_build.log" 2>&1); then
  tail -n 60 "$LOGDIR/gpu_build.log"
  echo "BUILD FAILED after ${SECONDS}s (full log: $LOGDIR/gpu_build.log)"
  exit 1
fi
grep -E "aits: " "$LOGDIR/gpu_build.log" || true
echo "built in ${SECONDS}s"
(cd "$WORK" && "$PY" -c "
import torch, aits
from aits import _extension
assert _extension.cuda_built(), 'aits was built without its CUDA back end'
assert torch.cuda.is_available(), 'torch sees no GPU'
print('aits CUDA back end loaded on', torch.cuda.get_device_name())") || exit 1

status=0
step "tests/test_cuda.py"
(cd "$WORK" && timeout 300 "$PY" -m pytest -q -ra -p no:cacheprovider "$REPO/tests/test_cuda.py") \
  || { status=1; echo "TESTS FAILED"; }

step "kernel benchmark"
(cd "$WORK" && timeout 240 "$PY" "$REPO/benchmarks/gpu_bench.py") || { status=1; echo "BENCHMARK FAILED"; }

step "ensembles on the GPU (benchmarks/ensemble.py --device cuda)"
# a copy outside the tree, so that the installed aits is imported, not the sources
cp "$REPO/benchmarks/ensemble.py" "$WORK/ensemble.py"
(cd "$WORK" && timeout 150 "$PY" ensemble.py --device cuda --batch 4096 65536 --steps 200) \
  || { status=1; echo "ENSEMBLE BENCHMARK FAILED"; }

step "done: $([ $status = 0 ] && echo OK || echo FAILURES) (log: $LOGDIR/gpu_check.log)"
exit $status
