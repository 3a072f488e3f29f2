#!/usr/bin/env bash
# The GPU check: fp16 AMP training of every shipped Transformer config on raccoon (a budget each; the
# guard never acts), exact resume on CUDA, the CUDA-graph predictor against YOLOv5 and the ultralytics
# package, the Swin V2 layer against the literal code, host syncs per step, a shortened trainer bench
# against both reference trainers, DDP with NCCL on the GPUs present. Unattended, at most 8 minutes on
# one CUDA GPU; prints one table (the logic and its bars: bench/gpu_check.py).
#
#   bash bench/gpu_check.sh                # on a CUDA machine
#   bash bench/gpu_check.sh --dry-run      # the same steps on the CPU, tiny sizes (a few minutes)
#
# Exit status: 0 all rows PASS/MISS/SKIP/INFO, 1 a row FAILed, 2 no CUDA device (without --dry-run),
# 124 the 8-minute limit cut it short (the script then prints what it had: SIGINT first).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"  # $PYTHON, else the project's .venv, else python3
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
    python=.venv/bin/python
fi
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # deterministic cuBLAS (resume check)
export PYTHONUNBUFFERED=1
limit=480  # the GPU check's 8 minutes; the CPU dry run gets 15 (CI machines are shared)
case " $* " in *" --dry-run "*) limit=900 ;; esac
export GPU_CHECK_STARTED="${GPU_CHECK_STARTED:-$(date +%s.%N)}"  # the budget counts from here, as the limit does
exec timeout --signal=INT --kill-after=30 "$limit" "$python" bench/gpu_check.py "$@"
