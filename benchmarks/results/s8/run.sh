#!/usr/bin/env bash
# Session 8, first call (one H200): GPU tests of the new estimation launches, then the stats / sums sweep at 128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s8; mkdir -p "$LOG"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv > "$LOG/device.txt" 2>&1
timeout 200 python3 -m pytest -q -m gpu tests/gpu/test_estimation_skew_gpu.py -x > "$LOG/gpu_tests.log" 2>&1
echo "tests rc=$?"; tail -5 "$LOG/gpu_tests.log"
cd benchmarks
timeout 330 python3 results/s8/sweep.py > "$LOG/sweep.log" 2>&1
echo "sweep rc=$?"; cut -c1-200 "$LOG/sweep.log"
