#!/usr/bin/env bash
# The GPU check: fp16 AMP training of every shipped Transformer config on raccoon (zero skipped steps),
# exact resume on CUDA, DDP with NCCL on the GPUs present, fp16/fp32 latency against the official
# YOLOv5 model, and the Swin V2 layer against the literal code. Unattended, at most 8 minutes on one
# CUDA GPU; prints one table (the logic and its bars: bench/gpu_check.py).
#
#   bash bench/gpu_check.sh                # on a CUDA machine
#   bash bench/gpu_check.sh --dry-run      # the same steps on the CPU, tiny sizes (about a minute)
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
exec timeout --signal=INT --kill-after=30 480 "$python" bench/gpu_check.py "$@"
