#!/usr/bin/env bash
# GPU checks in one go, for when a machine with a CUDA GPU is lent: every test marked
# `gpu` (skipped elsewhere) and the GPU parts of the benchmarks. Add new GPU checks here.
#   bash bench/gpu_check.sh            (uses .venv/bin/python if present, else $PYTHON or python)
# Needs cupy for the CUDA kernels: pip install cupy-cuda13x (the package's 'gpu' extra).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU; nothing to check here" >&2
    exit 1
fi
"$PY" -c "import cupy; print('cupy', cupy.__version__)" || echo "gpu_check: cupy is missing: the cupy kernels will be reported as unavailable" >&2
rc=0
echo "== GPU tests"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests || rc=1
echo "== blend benchmark (CPU goals and, with cupy, GPU goals)"
"$PY" bench/blend.py --reps 5 || rc=1
echo "gpu_check: exit $rc"
exit "$rc"
