#!/usr/bin/env bash
# The benchmarks on a GPU, as one prepared command: accelerations and the training
# step against PyTorch on the same GPU (`acceleration.py`, whose PyTorch side
# follows JAX onto CUDA), the batched training pass (`train_step.py`), the PyTorch
# comparison of the training step (`train_step.py --pytorch`: PyTorch's LNN,
# `acceleration_loss` and the user-written vmapped loss in one run), rollout
# training at width 500 (`rollout_training.py`), the graph scaling
# (`graph_scaling.py`) and a short solver comparison (`solvers.py --quick`; a small
# ODE on a GPU is bound by kernel launches, which this shows rather than hides).
#
#   bash benchmarks/device.sh           # writes into $OUT, or ./device-results
#
# It runs lagrax from this checkout (`src/` on PYTHONPATH, nothing installed) with
# the machine's own JAX, Equinox, Diffrax, Optax, jaxtyping and PyTorch, and gives
# each benchmark a time limit so that the whole run ends within about 9 minutes; a
# benchmark stopped at its limit keeps what it printed. Each benchmark's output goes
# to LABEL.txt, the solver table to solvers.md, and one line per benchmark (exit
# status, seconds) to summary.txt: 9 files, flat.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX would take 75% of the GPU's memory up front; PyTorch needs some too.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python=${PYTHON:-python3}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        2>&1 || echo "nvidia-smi: not available"
    "$python" -c 'import jax, lagrax; print("jax", jax.__version__, jax.devices())'
} 2>&1 | tee "$out/summary.txt"

run() {
    local label=$1 name=$2 limit=$3
    shift 3
    local start=$SECONDS
    timeout "$limit" "$python" "benchmarks/$name.py" "$@" 2>&1 | tee "$out/$label.txt"
    local status=${PIPESTATUS[0]}
    echo "$name $*: exit $status ($((SECONDS - start)) s of $limit)" | tee -a "$out/summary.txt"
}

run acceleration acceleration 110
run train_step train_step 50
run train_step-pytorch train_step 60 --pytorch
run rollout_training rollout_training 150 --width 500 --repeats 3
run graph_scaling graph_scaling 110
solvers=$(mktemp -d)
run solvers solvers 60 --quick --out "$solvers"
cp "$solvers"/solvers.md "$out"/ 2>/dev/null || true
