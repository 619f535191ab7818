#!/usr/bin/env bash
# Session 8, second call (one H200): builder GPU tests, program-count sweep, select profile at 128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s8b; mkdir -p "$LOG"
timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_prefill_gpu.py -k "vertical_slash" -x > "$LOG/gpu_tests.log" 2>&1
echo "tests rc=$?"; tail -3 "$LOG/gpu_tests.log"
cd benchmarks
timeout 300 python3 results/s8/sweep2.py > "$LOG/sweep2.log" 2>&1
echo "sweep2 rc=$?"; cut -c1-200 "$LOG/sweep2.log"
timeout 100 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "profile rc=$?"; grep -v Warn "$LOG/select_kernels.log" | cut -c1-150 | head -24
